//! Per-tenant policy parameters. The operator writes them as a TOML table
//! (or JSON); the host hands them to the policy as a JSON string in
//! `request.config` and to `validate-config` at load time.

use serde::de::DeserializeOwned;

/// Parses the tenant's parameters into `T`. An empty string gives
/// `T::default()`. Errors name the offending key, e.g. `unknown field
/// "downgrade-at-percnt", expected one of ...`; use kebab-case keys with
/// `#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]`.
pub fn parse_config<T: DeserializeOwned + Default>(config: &str) -> Result<T, String> {
    if config.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(config).map_err(|e| format!("invalid policy config: {e}"))
}

/// For a policy without parameters: accepts "" and an empty JSON object,
/// and refuses anything else naming what it got, e.g. `unknown config key
/// "limit"; this policy takes no parameters`.
pub fn no_parameters(config: &str) -> Result<(), String> {
    if config.trim().is_empty() {
        return Ok(());
    }
    let value: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("config is not valid JSON: {e}"))?;
    match value {
        serde_json::Value::Object(map) => match map.keys().next() {
            None => Ok(()),
            Some(key) => Err(format!("unknown config key {key:?}; this policy takes no parameters")),
        },
        _ => Err("config must be a JSON object; this policy takes no parameters".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
    struct Params {
        downgrade_at_percent: u64,
    }

    impl Default for Params {
        fn default() -> Self {
            Params {
                downgrade_at_percent: 80,
            }
        }
    }

    #[test]
    fn empty_gives_defaults() {
        assert_eq!(parse_config::<Params>("").unwrap(), Params::default());
        assert_eq!(parse_config::<Params>("{}").unwrap(), Params::default());
    }

    #[test]
    fn errors_name_the_key() {
        let p = parse_config::<Params>(r#"{"downgrade-at-percent": 90}"#).unwrap();
        assert_eq!(p.downgrade_at_percent, 90);
        let err = parse_config::<Params>(r#"{"downgrade-at-percnt": 90}"#).unwrap_err();
        assert!(err.contains("downgrade-at-percnt"), "{err}");
        let err = parse_config::<Params>(r#"{"downgrade-at-percent": "x"}"#).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn no_parameters_accepts_only_nothing() {
        assert_eq!(no_parameters(""), Ok(()));
        assert_eq!(no_parameters(" {} "), Ok(()));
        let err = no_parameters(r#"{"start-hour": 8}"#).unwrap_err();
        assert!(err.contains("\"start-hour\""), "{err}");
        assert!(no_parameters("[]").unwrap_err().contains("JSON object"));
        assert!(no_parameters("{").unwrap_err().contains("not valid JSON"));
    }
}
