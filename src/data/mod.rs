//! Data models (`[database] data_model`): what a preview's database holds and how it gets there.
//!
//! | model             | branch | parent's rows | after migrations            |
//! |-------------------|--------|---------------|-----------------------------|
//! | `database-branch` | yes    | copied        | -                           |
//! | `anonymized`      | yes    | masked        | -                           |
//! | `seeded`          | yes    | copied        | `[database] seed`, new only |
//! | `fixtures`        | yes    | none (schema) | `[database] seed`, new only |
//! | `none`            | no     | none          | no `DATABASE_URL` at all    |
//!
//! [`plan`] turns the settings into a [`DataPlan`] before anything is created, so a bad rule or a
//! missing seed command fails the run with nothing to tear down. Pure: no I/O here; the
//! providers apply the masking ([`masking`]) and the preview flow runs the seed.

pub mod masking;

use anyhow::bail;

use crate::config::{DataModel, DatabaseSettings, ResetPolicy};
pub use masking::Mask;

/// What the preview's database gets, decided from `[database]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPlan {
    pub model: DataModel,
    /// False for `none`: no branch, no `DATABASE_URL`.
    pub branch: bool,
    pub schema_only: bool,
    /// `Some` for `anonymized`: applied before the branch's URI is handed out.
    pub masking: Option<Vec<Mask>>,
    /// The seed command, run once on a new branch after the migrations.
    pub seed: Option<String>,
    pub reset: ResetPolicy,
}

impl DataPlan {
    /// What the data clause says about the parent's rows: `copied`, `masked` or `none`.
    pub fn parent_rows(&self) -> &'static str {
        match self.model {
            DataModel::None => "none",
            DataModel::Anonymized => "masked",
            _ if self.schema_only => "none",
            _ => "copied",
        }
    }
}

/// The name a model has in atlas.toml and in the data clause.
pub fn model_name(m: DataModel) -> &'static str {
    match m {
        DataModel::DatabaseBranch => "database-branch",
        DataModel::Anonymized => "anonymized",
        DataModel::Seeded => "seeded",
        DataModel::Fixtures => "fixtures",
        DataModel::None => "none",
    }
}

/// Checks `[database]` and decides the plan. Every error names the key to fix.
pub fn plan(db: &DatabaseSettings) -> anyhow::Result<DataPlan> {
    let model = db.data_model;
    let name = model_name(model);
    if model != DataModel::Anonymized && !db.masking.is_empty() {
        bail!(
            "[[database.masking]] rules are set but data_model = \"{name}\" applies none; set data_model = \"anonymized\" (or remove the rules)"
        );
    }
    let seeds = matches!(model, DataModel::Seeded | DataModel::Fixtures);
    if seeds && db.seed.as_deref().is_none_or(|s| s.trim().is_empty()) {
        bail!("data_model = \"{name}\" needs a seed command: set [database] seed in atlas.toml");
    }
    if !seeds && db.seed.is_some() {
        bail!(
            "[database] seed is set but data_model = \"{name}\" never runs it; use \"seeded\" or \"fixtures\" (or remove it)"
        );
    }
    if model == DataModel::None && db.reset != ResetPolicy::Never {
        bail!("[database] reset needs a database: data_model = \"none\" has none");
    }
    if model == DataModel::None && db.migrations.is_some() {
        bail!(
            "[database] migrations needs a database: data_model = \"none\" creates none (remove the command or pick another model)"
        );
    }
    let masking = if model == DataModel::Anonymized {
        if db.masking.is_empty() {
            bail!(
                "data_model = \"anonymized\" needs masking rules: add [[database.masking]] entries (table, column, function or value); atlas never falls back to a plain copy"
            );
        }
        if db.schema_only {
            bail!(
                "data_model = \"anonymized\" masks the parent's rows; schema_only = true copies none (use \"fixtures\" for schema only)"
            );
        }
        Some(masking::parse_rules(&db.masking)?)
    } else {
        None
    };
    Ok(DataPlan {
        model,
        branch: model != DataModel::None,
        schema_only: model == DataModel::Fixtures || db.schema_only,
        masking,
        seed: if seeds { db.seed.clone() } else { None },
        reset: db.reset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MaskingRule;

    fn db(model: DataModel) -> DatabaseSettings {
        DatabaseSettings {
            data_model: model,
            ..Default::default()
        }
    }

    #[test]
    fn every_model_plans_what_its_table_row_says() {
        let p = plan(&db(DataModel::DatabaseBranch)).unwrap();
        assert!(p.branch && p.masking.is_none() && p.seed.is_none());
        assert_eq!(p.parent_rows(), "copied");

        let mut d = db(DataModel::Fixtures);
        d.seed = Some("sh seed.sh".into());
        let p = plan(&d).unwrap();
        assert!(p.schema_only);
        assert_eq!(p.parent_rows(), "none");
        assert_eq!(p.seed.as_deref(), Some("sh seed.sh"));

        d.data_model = DataModel::Seeded;
        let p = plan(&d).unwrap();
        assert!(!p.schema_only);
        assert_eq!(p.parent_rows(), "copied");

        let p = plan(&db(DataModel::None)).unwrap();
        assert!(!p.branch);
        assert_eq!(p.parent_rows(), "none");

        let mut d = db(DataModel::Anonymized);
        d.masking = vec![MaskingRule {
            schema: "public".into(),
            table: "users".into(),
            column: "email".into(),
            function: Some("anon.fake_email()".into()),
            value: None,
        }];
        let p = plan(&d).unwrap();
        assert_eq!(
            p.masking.unwrap()[0].display(),
            "users.email -> anon.fake_email()"
        );
    }

    #[test]
    fn atlas_toml_spells_the_models_and_rules_like_the_readme() {
        let s = crate::config::Settings::parse(
            r#"
[database]
data_model = "anonymized"
reset = "on-push"
anonymize_timeout = "90s"

[[database.masking]]
table = "users"
column = "email"
function = "anon.fake_email()"

[[database.masking]]
schema = "crm"
table = "contacts"
column = "phone"
value = "+00"
"#,
            "atlas.toml",
        )
        .unwrap();
        let p = plan(&s.database).unwrap();
        assert_eq!(p.reset, ResetPolicy::OnPush);
        assert_eq!(s.database.anonymize_timeout.as_secs(), 90);
        let m = p.masking.unwrap();
        assert_eq!(m[1].display(), "crm.contacts.phone -> a fixed value");
        let e = crate::config::Settings::parse(
            "[[database.masking]]\ntable = \"t\"\ncolumn = \"c\"\nfunc = \"x\"\n",
            "atlas.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("line"), "{e}");
        let e =
            crate::config::Settings::parse("[database]\ndata_model = \"masked\"\n", "atlas.toml")
                .unwrap_err();
        assert!(e.to_string().contains("anonymized"), "{e}");
    }

    #[test]
    fn inconsistent_settings_are_refused_with_the_key_to_fix() {
        let e = plan(&db(DataModel::Anonymized)).unwrap_err().to_string();
        assert!(
            e.contains("[[database.masking]]") && e.contains("never falls back"),
            "{e}"
        );
        let e = plan(&db(DataModel::Seeded)).unwrap_err().to_string();
        assert!(e.contains("[database] seed"), "{e}");
        let mut d = db(DataModel::DatabaseBranch);
        d.seed = Some("x".into());
        assert!(plan(&d).unwrap_err().to_string().contains("never runs it"));
        let mut d = db(DataModel::None);
        d.reset = ResetPolicy::OnPush;
        assert!(plan(&d).is_err());
    }
}
