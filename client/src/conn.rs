//! Where the client commands find the farm: `--url`/`--token` (or
//! `TESSERA_URL`/`TESSERA_TOKEN`), else a config file of `key = value` lines
//! (`url`, `token`): `--config`, else `TESSERA_CLIENT_CONFIG`, else
//! `$XDG_CONFIG_HOME/tessera/client.conf`, else
//! `~/.config/tessera/client.conf`. The URL defaults to
//! `http://127.0.0.1:7878`; a token has no default.

use std::ffi::OsString;
use std::path::PathBuf;

use tessera_protocol::settings::{parse_config, SettingsError};

/// Why the client does not know where, or as whom, to connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(transparent)]
    Config(#[from] SettingsError),
    #[error(
        "no API token: pass --token, set TESSERA_TOKEN, or put {file} \
         (make one with `tessera token create --kind api` on the coordinator's machine)"
    )]
    NoToken { file: String },
    #[error("the coordinator's URL must be http:// or https://, not {0:?}")]
    Scheme(String),
    #[error("{0:?} is not a coordinator address like http://farm:7878")]
    Address(String),
}

/// The coordinator's API when nothing says otherwise (`tessera coordinator`'s default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:7878";

/// The flags every client command takes.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ConnArgs {
    /// The coordinator's HTTP address, or several of one farm's coordinators separated by commas (a request goes to the next when one is gone or standing by) [default: the config file's `url`, else http://127.0.0.1:7878].
    #[cfg_attr(feature = "cli", arg(long, env = "TESSERA_URL"))]
    pub url: Option<String>,
    /// An API token (`tessera token create --kind api`) [default: the config file's `token`].
    #[cfg_attr(feature = "cli", arg(long, env = "TESSERA_TOKEN", hide_env_values = true))]
    pub token: Option<String>,
    /// A client config file of `key = value` lines (`url`, `token`)
    /// [default: TESSERA_CLIENT_CONFIG, else $XDG_CONFIG_HOME/tessera/client.conf
    /// or ~/.config/tessera/client.conf].
    #[cfg_attr(feature = "cli", arg(long))]
    pub config: Option<PathBuf>,
}

/// Where to send requests, and as whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    /// Scheme, host, port and any path prefix; no trailing `/`.
    pub url: String,
    pub token: String,
}

impl ConnArgs {
    /// Resolves the address and token from the flags, the environment and the config file.
    pub fn resolve(&self) -> Result<Conn, ConnError> {
        resolve(self, |k| std::env::var_os(k))
    }
}

/// The config file to read, and whether it was named explicitly (a named
/// file must exist; the default one may be absent).
fn config_path(args: &ConnArgs, env: &impl Fn(&str) -> Option<OsString>) -> Option<(PathBuf, bool)> {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = &args.config {
        return Some((p.clone(), true));
    }
    if let Some(p) = nonempty("TESSERA_CLIENT_CONFIG") {
        return Some((PathBuf::from(p), true));
    }
    let dir = nonempty("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some((dir.join("tessera/client.conf"), false))
}

/// [`ConnArgs::resolve`] with the environment given as a function (tests).
pub fn resolve(args: &ConnArgs, env: impl Fn(&str) -> Option<OsString>) -> Result<Conn, ConnError> {
    let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let (mut url, mut token) = (given(&args.url), given(&args.token));
    let path = config_path(args, &env);
    if url.is_none() || token.is_none() || args.config.is_some() {
        if let Some((p, explicit)) = &path {
            if *explicit || p.is_file() {
                let shown = p.display().to_string();
                let text =
                    std::fs::read_to_string(p).map_err(|source| SettingsError::Read { path: shown.clone(), source })?;
                let file = parse_config(&text, &shown, &["url", "token"])?;
                let get = |k: &str| file.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
                url = url.or_else(|| get("url"));
                token = token.or_else(|| get("token"));
            }
        }
    }
    let url = normalize_url(url.as_deref().unwrap_or(DEFAULT_URL))?;
    let Some(token) = token else {
        let file = match &path {
            Some((p, _)) => format!("a `token = ta_…` line in {}", p.display()),
            None => "a `token = ta_…` line in a config file given with --config".to_owned(),
        };
        return Err(ConnError::NoToken { file });
    };
    Ok(Conn { url, token })
}

/// `http(s)://host[:port][/prefix]` without a trailing `/`; a bare
/// `host:port` gets `http://`. Several, separated by commas (the
/// coordinators of one farm), are each normalized.
pub fn normalize_url(url: &str) -> Result<String, ConnError> {
    if url.contains(',') {
        let each: Result<Vec<String>, ConnError> = url.split(',').map(normalize_one).collect();
        return Ok(each?.join(","));
    }
    normalize_one(url)
}

fn normalize_one(url: &str) -> Result<String, ConnError> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let rest = rest.trim_end_matches('/');
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(ConnError::Scheme(url.to_owned()));
    }
    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#']) || rest.contains(char::is_whitespace) {
        return Err(ConnError::Address(url.to_owned()));
    }
    Ok(format!("{scheme}://{rest}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env<P: AsRef<std::path::Path>>(vars: &[(&str, P)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> =
            vars.iter().map(|(k, v)| (k.to_string(), v.as_ref().as_os_str().to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    fn args(url: Option<&str>, token: Option<&str>, config: Option<PathBuf>) -> ConnArgs {
        ConnArgs { url: url.map(Into::into), token: token.map(Into::into), config }
    }

    #[test]
    fn flags_beat_the_config_file_which_beats_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let xdg = dir.path().join("xdg");
        std::fs::create_dir_all(xdg.join("tessera")).unwrap();
        std::fs::write(xdg.join("tessera/client.conf"), "url = http://xdg:1\ntoken = ta_xdg\n").unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".config/tessera")).unwrap();
        std::fs::write(home.join(".config/tessera/client.conf"), "url = \"home:2/\"\ntoken = ta_home # mine\n")
            .unwrap();
        let named = dir.path().join("named.conf");
        std::fs::write(&named, "token = ta_named\n").unwrap();
        let from_env = dir.path().join("env.conf");
        std::fs::write(&from_env, "url = https://env:3\n").unwrap();

        // Only HOME: ~/.config, quotes and comments stripped, http:// added.
        let c = resolve(&args(None, None, None), env(&[("HOME", &home)])).unwrap();
        assert_eq!(c, Conn { url: "http://home:2".into(), token: "ta_home".into() });
        // XDG_CONFIG_HOME wins over HOME.
        let c = resolve(&args(None, None, None), env(&[("HOME", &home), ("XDG_CONFIG_HOME", &xdg)])).unwrap();
        assert_eq!(c, Conn { url: "http://xdg:1".into(), token: "ta_xdg".into() });
        // TESSERA_CLIENT_CONFIG wins over both; what it lacks takes the default, not another file.
        let e = env(&[("HOME", &home), ("XDG_CONFIG_HOME", &xdg), ("TESSERA_CLIENT_CONFIG", &from_env)]);
        let err = resolve(&args(None, None, None), &e).unwrap_err().to_string();
        assert!(err.contains("--token") && err.contains("TESSERA_TOKEN") && err.contains("env.conf"), "{err}");
        let c = resolve(&args(None, Some("ta_flag"), None), &e).unwrap();
        assert_eq!(c, Conn { url: "https://env:3".into(), token: "ta_flag".into() });
        // --config wins over TESSERA_CLIENT_CONFIG; the URL falls back to the default.
        let c = resolve(&args(None, None, Some(named.clone())), &e).unwrap();
        assert_eq!(c, Conn { url: DEFAULT_URL.into(), token: "ta_named".into() });
        // Flags (clap fills them from TESSERA_URL/TESSERA_TOKEN too) win over any file.
        let c = resolve(&args(Some("http://flag:4/"), Some("ta_flag"), Some(named)), &e).unwrap();
        assert_eq!(c, Conn { url: "http://flag:4".into(), token: "ta_flag".into() });
    }

    #[test]
    fn a_named_config_must_exist_and_the_default_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.conf");
        let err = resolve(&args(None, Some("t"), Some(missing.clone())), env::<&std::path::Path>(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.conf"), "{err}");
        let err =
            resolve(&args(None, Some("t"), None), env(&[("TESSERA_CLIENT_CONFIG", &missing)])).unwrap_err().to_string();
        assert!(err.contains("nope.conf"), "{err}");
        // No config file at the default place: fine, given a token.
        let c = resolve(&args(None, Some("ta_x"), None), env(&[("HOME", dir.path())])).unwrap();
        assert_eq!(c.url, DEFAULT_URL);
        // No token anywhere: the error names all three ways.
        let err = resolve(&args(None, None, None), env(&[("HOME", dir.path())])).unwrap_err().to_string();
        assert!(err.contains("--token") && err.contains("TESSERA_TOKEN") && err.contains("client.conf"), "{err}");
        // Unknown keys in the file are refused, not ignored.
        let bad = dir.path().join("bad.conf");
        std::fs::write(&bad, "tokn = x\n").unwrap();
        let err = resolve(&args(None, None, Some(bad)), env::<&std::path::Path>(&[])).unwrap_err().to_string();
        assert!(err.contains("tokn"), "{err}");
    }

    #[test]
    fn urls_are_normalized_and_checked() {
        assert_eq!(normalize_url("farm:7878").unwrap(), "http://farm:7878");
        assert_eq!(normalize_url(" https://farm.example/tessera/ ").unwrap(), "https://farm.example/tessera");
        assert_eq!(normalize_url("HTTP://127.0.0.1:7878").unwrap(), "HTTP://127.0.0.1:7878");
        assert_eq!(normalize_url("a:7878, http://b:7878/").unwrap(), "http://a:7878,http://b:7878");
        for bad in
            ["ftp://farm", "http://", "http:///x", "http://farm/?a=b", "", "/", "farm 1:7878", "a:1,", "a:1,ftp://b"]
        {
            assert!(normalize_url(bad).is_err(), "{bad:?}");
        }
    }
}
