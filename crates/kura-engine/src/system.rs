//! The host side: system users, file ownership, running helper programs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::{EngineError, io_error};

/// A system user's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemUser {
    pub uid: u32,
    pub gid: u32,
}

/// Looks a user up in /etc/passwd (engines run as `postgres` or `mysql`).
pub fn lookup_user(name: &str) -> Result<SystemUser, EngineError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io_error("reading /etc/passwd"))?;
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let user = fields.next()?;
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            (user == name).then_some(SystemUser { uid, gid })
        })
        .next()
        .ok_or_else(|| EngineError::NoSuchUser(name.to_owned()))
}

/// Creates `dir` (and parents) owned by `user` with mode `mode`.
pub fn make_owned_dir(dir: &Path, user: SystemUser, mode: u32) -> Result<(), EngineError> {
    std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
        .map_err(io_error(format!("chown {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(io_error(format!("chmod {}", dir.display())))
}

/// Writes a file owned by `user` with mode `mode` (used for keys and password files).
pub fn write_owned_file(
    path: &Path,
    contents: &[u8],
    user: SystemUser,
    mode: u32,
) -> Result<(), EngineError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let action = format!("writing {}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_error(action.clone()))?;
    file.write_all(contents).map_err(io_error(action.clone()))?;
    file.sync_all().map_err(io_error(action.clone()))?;
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_error(action))
}

/// Fails clearly if an engine program is missing.
pub fn require(program: &'static str, path: &Path) -> Result<(), EngineError> {
    if path.exists() {
        Ok(())
    } else {
        Err(EngineError::NotInstalled {
            program,
            path: path.to_owned(),
        })
    }
}

/// Runs a program to completion as `user`, feeding `stdin`; fails with its output if it
/// exits non-zero. The output is kept out of logs when it may carry secrets.
pub async fn run_as(
    user: SystemUser,
    program: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<String, EngineError> {
    let command_text = format!("{} {}", program.display(), args.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .uid(user.uid)
        .gid(user.gid)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error(format!("starting {command_text}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .await
            .map_err(io_error(format!("writing to {command_text}")))?;
        drop(pipe);
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(io_error(format!("waiting for {command_text}")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(EngineError::Command {
            command: command_text,
            status: output.status.to_string(),
            output: text.chars().take(4000).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_uid_zero() {
        assert_eq!(
            lookup_user("root").ok(),
            Some(SystemUser { uid: 0, gid: 0 })
        );
        assert!(lookup_user("no-such-user-kura").is_err());
    }
}
