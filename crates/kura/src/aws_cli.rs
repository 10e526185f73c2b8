//! Data files for the aws CLI, written by `kura serve` into `<data-dir>/aws-cli`.
//!
//! The aws CLI 2.9 of Debian 12 sends the AssumeRole call of a profile with `role_arn` +
//! `source_profile` to AWS's own STS endpoint, whatever `--endpoint-url` says (CLI 2.13+
//! reads `endpoint_url` from the profile instead). The CLI looks for its service data in
//! the directories of `AWS_DATA_PATH` before its own, so an STS endpoint rule set there
//! that names kura sends those calls to kura.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

/// The directory to give the aws CLI as `AWS_DATA_PATH`.
pub fn data_path(data_dir: &Path) -> PathBuf {
    data_dir.join("aws-cli")
}

/// Writes `<data-dir>/aws-cli/sts/2011-06-15/endpoint-rule-set-1.json`, an STS endpoint
/// rule set that sends every STS call without an explicit endpoint to `endpoint`, so that
/// role profiles of the aws CLI 2.9 assume their roles at this server (see the module doc).
pub fn write_sts_endpoint_rules(data_dir: &Path, endpoint: &str) -> std::io::Result<PathBuf> {
    let directory = data_path(data_dir).join("sts").join("2011-06-15");
    std::fs::create_dir_all(&directory)?;
    let flag = |built_in: &str| json!({"builtIn": built_in, "required": true, "default": false, "type": "Boolean"});
    let rules = json!({
        "version": "1.0",
        "parameters": {
            "Region": {"builtIn": "AWS::Region", "required": false, "type": "String"},
            "UseDualStack": flag("AWS::UseDualStack"),
            "UseFIPS": flag("AWS::UseFIPS"),
            "Endpoint": {"builtIn": "SDK::Endpoint", "required": false, "type": "String"},
            "UseGlobalEndpoint": flag("AWS::STS::UseGlobalEndpoint"),
        },
        "rules": [
            {
                "conditions": [{"fn": "isSet", "argv": [{"ref": "Endpoint"}]}],
                "endpoint": {"url": {"ref": "Endpoint"}, "properties": {}, "headers": {}},
                "type": "endpoint",
            },
            {
                "conditions": [],
                "endpoint": {"url": endpoint, "properties": {}, "headers": {}},
                "type": "endpoint",
            },
        ],
    });
    let path = directory.join("endpoint-rule-set-1.json");
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(rules.to_string().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(data_path(data_dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_rule_set_names_the_server_unless_an_endpoint_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let data_path = write_sts_endpoint_rules(dir.path(), "http://127.0.0.1:5872").unwrap();
        assert_eq!(data_path, dir.path().join("aws-cli"));
        let written: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data_path.join("sts/2011-06-15/endpoint-rule-set-1.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(written["rules"][0]["endpoint"]["url"]["ref"], "Endpoint");
        assert_eq!(
            written["rules"][1]["endpoint"]["url"],
            "http://127.0.0.1:5872"
        );
        // Rewritten on every start: the port may change.
        write_sts_endpoint_rules(dir.path(), "http://127.0.0.1:6000").unwrap();
        let again =
            std::fs::read_to_string(data_path.join("sts/2011-06-15/endpoint-rule-set-1.json"));
        assert!(again.unwrap().contains("127.0.0.1:6000"));
    }
}
