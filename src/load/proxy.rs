//! Outbound HTTP proxies for the generator, read from the environment as curl and reqwest read
//! them (`https_proxy`/`HTTPS_PROXY` for https targets, `http_proxy`/`HTTP_PROXY` for http ones,
//! `all_proxy`/`ALL_PROXY` for both, `no_proxy`/`NO_PROXY` for exceptions), so that a
//! self-hosted runner whose egress goes through a proxy loads its preview the same way its smoke
//! checks (reqwest) reach it. HTTPS goes through an HTTP `CONNECT` tunnel; plain HTTP is sent to
//! the proxy in absolute form. Loopback targets never use a proxy. The alert webhook's client
//! takes its proxy from the same rules ([`reqwest_proxy`]), so both read the variables alike.

use std::net::IpAddr;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A proxy to reach the target through.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization` value, from the proxy URL's credentials (registered as a secret).
    pub authorization: Option<String>,
    /// `http://host:port`, without credentials, for messages.
    pub display: String,
}

/// The proxy for a `scheme` target on `host`, from the variables `var` returns (lowercase names
/// first, as curl does); `None` when none applies. `who` names the client in errors.
pub fn for_target(
    scheme: &str,
    host: &str,
    var: &dyn Fn(&str) -> Option<String>,
    who: &str,
) -> anyhow::Result<Option<Proxy>> {
    let get = |name: &str| {
        var(&name.to_ascii_lowercase())
            .or_else(|| var(&name.to_ascii_uppercase()))
            .filter(|v| !v.trim().is_empty())
    };
    if is_loopback(host) {
        return Ok(None);
    }
    if let Some(list) = get("no_proxy")
        && no_proxy_matches(&list, host)
    {
        return Ok(None);
    }
    let own = format!("{scheme}_proxy");
    let (name, value) = match get(&own) {
        Some(v) => (own, v),
        None => match get("all_proxy") {
            Some(v) => ("all_proxy".to_string(), v),
            None => return Ok(None),
        },
    };
    parse(&value)
        .with_context(|| format!("{who} cannot use {name}"))
        .map(Some)
}

/// The reqwest proxy for `url` under the variables in `env` (what [`for_target`] picks, with its
/// credentials), or `None` when the request goes direct; `who` names the client in errors.
pub fn reqwest_proxy(
    url: &str,
    env: &[(String, String)],
    who: &str,
) -> anyhow::Result<Option<reqwest::Proxy>> {
    let u = url::Url::parse(url).map_err(|e| anyhow::anyhow!("{who}: not a URL ({e})"))?;
    let host = u
        .host_str()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(p) = for_target(u.scheme(), host, &var, who)? else {
        return Ok(None);
    };
    let mut proxy = reqwest::Proxy::all(&p.display)
        .map_err(|e| anyhow::anyhow!("{who} cannot use the proxy {}: {e}", p.display))?;
    if let Some(a) = &p.authorization {
        let v = http::HeaderValue::from_str(a)
            .map_err(|_| anyhow::anyhow!("{who}: the proxy credentials are not a valid header"))?;
        proxy = proxy.custom_http_auth(v);
    }
    Ok(Some(proxy))
}

fn parse(value: &str) -> anyhow::Result<Proxy> {
    let value = value.trim();
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| anyhow::anyhow!("the proxy is not a url like http://proxy:3128 ({e})"))?;
    if let Some(p) = url.password() {
        crate::secret::register(p);
    }
    if url.scheme() != "http" {
        bail!(
            "the proxy uses {}: only http:// proxies (with CONNECT for https targets) are supported",
            url.scheme()
        );
    }
    let host = url
        .host_str()
        .context("the proxy url has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port().unwrap_or(80);
    let authorization = if url.username().is_empty() {
        None
    } else {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = decode(url.username());
        let pass = decode(url.password().unwrap_or(""));
        crate::secret::register(&pass);
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        crate::secret::register(&header);
        Some(header)
    };
    let display = if host.contains(':') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    };
    Ok(Proxy {
        host,
        port,
        authorization,
        display,
    })
}

fn is_loopback(host: &str) -> bool {
    let h = host.to_ascii_lowercase();
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `no_proxy` (comma-separated: `*`, domains with or without a leading dot, IPs and
/// CIDR ranges; ports are ignored) exempts `host`.
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    list.split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some(ip) = ip {
                return ip_matches(&entry, ip);
            }
            // `example.com:8080` names the host; the port does not narrow it here.
            let entry = match entry.rsplit_once(':') {
                Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
                _ => entry,
            };
            let domain = entry.trim_start_matches("*.").trim_start_matches('.');
            host == domain || host.ends_with(&format!(".{domain}"))
        })
}

fn ip_matches(entry: &str, ip: IpAddr) -> bool {
    let entry = entry.trim_start_matches('[').trim_end_matches(']');
    let (addr, bits) = match entry.split_once('/') {
        Some((a, b)) => match b.parse::<u32>() {
            Ok(b) => (a, Some(b)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    match (addr.parse::<IpAddr>(), ip) {
        (Ok(IpAddr::V4(net)), IpAddr::V4(ip)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (Ok(IpAddr::V6(net)), IpAddr::V6(ip)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// Asks the proxy on `stream` for a tunnel to `host:port` (HTTP CONNECT) and reads its answer;
/// afterwards the stream talks to the target.
pub async fn tunnel(
    stream: &mut tokio::net::TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), String> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(a) = &proxy.authorization {
        req.push_str(&format!("Proxy-Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("proxy: {}", e.kind()))?;
    // Read the answer's head only: after a 200 every further byte belongs to the tunnel.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("proxy: invalid CONNECT response".into());
        }
        match stream.read(&mut byte).await {
            Ok(0) => return Err("proxy: closed the connection".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("proxy: {}", e.kind())),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&head) {
        Ok(httparse::Status::Complete(_)) => match resp.code {
            Some(c) if (200..300).contains(&c) => Ok(()),
            Some(c) => Err(format!("proxy: CONNECT answered {c}")),
            None => Err("proxy: invalid CONNECT response".into()),
        },
        _ => Err("proxy: invalid CONNECT response".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn the_scheme_picks_the_variable_and_lowercase_wins() {
        let e = env(&[
            ("https_proxy", "http://lower:3128"),
            ("HTTPS_PROXY", "http://upper:3128"),
            ("HTTP_PROXY", "plain:8080"),
        ]);
        let p = for_target("https", "app.fly.dev", &e, "the load generator")
            .unwrap()
            .unwrap();
        assert_eq!((p.host.as_str(), p.port), ("lower", 3128));
        let p = for_target("http", "app.fly.dev", &e, "the load generator")
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.display.as_str()),
            ("plain", 8080, "http://plain:8080")
        );
        let e = env(&[("ALL_PROXY", "http://all:1")]);
        assert_eq!(
            for_target("https", "x.dev", &e, "the load generator")
                .unwrap()
                .unwrap()
                .host,
            "all"
        );
        assert!(
            for_target("https", "x.dev", &env(&[]), "the load generator")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn loopback_and_no_proxy_go_direct() {
        let e = env(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            (
                "NO_PROXY",
                " .internal, example.com:8443 ,10.0.0.0/8,[fd00::1], *.corp",
            ),
        ]);
        for direct in [
            "localhost",
            "127.0.0.1",
            "::1",
            "svc.internal",
            "internal",
            "example.com",
            "api.example.com",
            "10.1.2.3",
            "fd00::1",
            "git.corp",
        ] {
            assert!(
                for_target("https", direct, &e, "the load generator")
                    .unwrap()
                    .is_none(),
                "{direct}"
            );
        }
        for proxied in [
            "app.fly.dev",
            "notexample.com",
            "11.0.0.1",
            "fd00::2",
            "corp.io",
        ] {
            assert!(
                for_target("https", proxied, &e, "the load generator")
                    .unwrap()
                    .is_some(),
                "{proxied}"
            );
        }
        let star = env(&[("HTTPS_PROXY", "http://proxy:3128"), ("no_proxy", "*")]);
        assert!(
            for_target("https", "app.fly.dev", &star, "the load generator")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn credentials_become_a_masked_basic_header() {
        let e = env(&[("HTTPS_PROXY", "http://user:p%40ss-proxy-9d2e@proxy:3128")]);
        let p = for_target("https", "app.fly.dev", &e, "the load generator")
            .unwrap()
            .unwrap();
        assert_eq!(
            p.authorization.as_deref(),
            Some(
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("user:p@ss-proxy-9d2e")
                )
                .as_str()
            )
        );
        assert!(!p.display.contains("p%40ss"));
        let redacted = crate::secret::redact("p@ss-proxy-9d2e and p%40ss-proxy-9d2e");
        assert!(!redacted.contains("ss-proxy-9d2e"), "{redacted}");
    }

    #[test]
    fn unsupported_proxies_name_the_variable() {
        let e = env(&[("HTTPS_PROXY", "socks5://proxy:1080")]);
        let err = format!(
            "{:#}",
            for_target("https", "app.fly.dev", &e, "the load generator").unwrap_err()
        );
        assert!(
            err.contains("https_proxy") && err.contains("socks5"),
            "{err}"
        );
    }
}
