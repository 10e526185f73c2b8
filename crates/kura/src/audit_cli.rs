//! `kura audit verify` and `kura audit export`: offline tools over the audit trail in a
//! data directory (they also work while the server runs).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use kura_audit::Report;
use kura_crypto::RootKey;

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the whole audit trail: every record's place in the hash chain, every digest's
    /// signature, the digest chain, and that the digests match the records.
    ///
    /// Prints the first broken point (file, line, byte offset, sequence number, what is
    /// wrong) and exits 1 if the trail was altered; exits 2 if it cannot be checked.
    #[command(verbatim_doc_comment)]
    Verify {
        /// Data directory [default: ./kura-data].
        #[arg(long, env = "KURA_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Root key file, which unwraps the digest signing key [default: <data-dir>/root.key].
        #[arg(long, env = "KURA_ROOT_KEY_FILE")]
        root_key_file: Option<PathBuf>,
        /// Verify with this Ed25519 public key (64 hex digits, as printed by an earlier
        /// verify) instead of the one the root key unwraps.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write the audit records as JSON lines (CloudTrail's record format), oldest first.
    Export {
        /// Data directory [default: ./kura-data].
        #[arg(long, env = "KURA_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Only the records delivered to this account.
        #[arg(long)]
        account: Option<String>,
    },
}

pub fn run(args: AuditArgs) -> ExitCode {
    match args.command {
        AuditCommand::Verify {
            data_dir,
            root_key_file,
            public_key,
        } => verify(data_dir, root_key_file, public_key),
        AuditCommand::Export { data_dir, account } => export(data_dir, account),
    }
}

fn audit_dir(data_dir: Option<PathBuf>) -> (PathBuf, PathBuf) {
    let data_dir = data_dir.unwrap_or_else(crate::default_data_dir);
    let audit = data_dir.join("audit");
    (data_dir, audit)
}

fn cannot(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("kura audit: {message}");
    ExitCode::from(2)
}

fn public_key_from(
    data_dir: &Path,
    audit: &Path,
    root_key_file: Option<PathBuf>,
    public_key: Option<String>,
) -> Result<Vec<u8>, String> {
    if let Some(hex_key) = public_key {
        return hex::decode(hex_key.trim())
            .ok()
            .filter(|k| k.len() == kura_crypto::PUBLIC_KEY_LEN)
            .ok_or_else(|| "--public-key must be 64 hex digits".to_owned());
    }
    let root_key_file = root_key_file.unwrap_or_else(|| data_dir.join("root.key"));
    if !root_key_file.exists() {
        return Err(format!(
            "the root key {} is missing; give --root-key-file or --public-key",
            root_key_file.display()
        ));
    }
    let (root_key, _) = RootKey::load_or_create(&root_key_file).map_err(|e| e.to_string())?;
    kura_audit::signing_public_key(audit, &root_key).map_err(|e| e.to_string())
}

fn verify(
    data_dir: Option<PathBuf>,
    root_key_file: Option<PathBuf>,
    public_key: Option<String>,
) -> ExitCode {
    let (data_dir, audit) = audit_dir(data_dir);
    if !audit.is_dir() {
        return cannot(format!("no audit trail in {}", audit.display()));
    }
    let key = match public_key_from(&data_dir, &audit, root_key_file, public_key) {
        Ok(key) => key,
        Err(message) => return cannot(message),
    };
    let mut report = match kura_audit::verify::verify_trail(&audit, &key) {
        Ok(report) => report,
        Err(error) => return cannot(format!("cannot read {}: {error}", audit.display())),
    };
    if !report.is_intact() {
        // On a live trail a segment can be rotated while it is read: look again once so
        // that only a break that stays is reported.
        std::thread::sleep(Duration::from_millis(300));
        match kura_audit::verify::verify_trail(&audit, &key) {
            Ok(again) => report = again,
            Err(error) => return cannot(format!("cannot read {}: {error}", audit.display())),
        }
    }
    print_report(&audit, &key, &report);
    if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_report(audit: &Path, key: &[u8], report: &Report) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "audit trail: {}", audit.display());
    let _ = writeln!(
        out,
        "signing key: Ed25519 {} (fingerprint {})",
        hex::encode(key),
        kura_crypto::public_key_fingerprint(key)
    );
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    if let Some(problem) = &report.problem {
        let _ = writeln!(out, "BROKEN at {}", problem.location);
        let _ = writeln!(out, "  {}", problem.message);
        let _ = writeln!(out, "verified before the break: {} records", report.records);
        return;
    }
    let _ = writeln!(
        out,
        "OK: {} records (seq 1-{}) in {} segment files, {} signed digests",
        report.records, report.last_seq, report.segments, report.digests
    );
    if let Some(last) = &report.last_digest {
        let _ = writeln!(
            out,
            "newest digest: #{} at {}, covers seq 1-{}, digest hash {}",
            last.digest_seq, last.time, last.last_seq, last.hash
        );
    }
    if report.unsigned_records > 0 {
        let _ = writeln!(
            out,
            "{} records after the newest digest are protected by the hash chain only (a digest signs them within seconds, or at the next start)",
            report.unsigned_records
        );
    }
}

fn export(data_dir: Option<PathBuf>, account: Option<String>) -> ExitCode {
    let (_, audit) = audit_dir(data_dir);
    if !audit.is_dir() {
        return cannot(format!("no audit trail in {}", audit.display()));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match kura_audit::export::export(&audit, account.as_deref(), &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => cannot(format!("cannot export {}: {error}", audit.display())),
    }
}
