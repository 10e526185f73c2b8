//! The `kura` binary: command-line interface, configuration and wiring.
//!
//! Owns: parsing flags and the configuration file, building the services and the edge in
//! the right order, first-start bootstrap (root key, default account, credentials file),
//! signal handling and start-up output. Must not: hold logic worth testing on its own —
//! that lives in the library crates.

mod audit_cli;
mod aws_cli;
mod config;
mod serve;
mod volume_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kura (蔵, "storehouse"): a self-hosted, AWS-compatible key management service.
///
/// kura speaks the AWS KMS API, so the unmodified `aws` CLI, boto3 and the AWS SDKs work
/// against it with `--endpoint-url`. Every request is authenticated with AWS Signature
/// Version 4 and authorized with key policies and IAM policies, as on AWS.
///
/// Quick start:
///
///   kura serve --data-dir ./kura-data
///
///   export AWS_SHARED_CREDENTIALS_FILE=./kura-data/credentials AWS_DEFAULT_REGION=us-east-1
///
///   aws --endpoint-url http://127.0.0.1:5872 kms create-key --description demo
#[derive(Parser, Debug)]
#[command(name = "kura", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server until interrupted (Ctrl-C or SIGTERM).
    ///
    /// On first start with an empty data directory, kura creates the root key that
    /// protects all key material at rest, an account 000000000000 with a user
    /// `administrator`, and `<data-dir>/credentials`: an AWS shared-credentials file whose
    /// `default` profile holds that user's access key.
    #[command(verbatim_doc_comment)]
    Serve(serve::ServeArgs),
    /// Check or export the audit trail (`kura audit verify`, `kura audit export`).
    Audit(audit_cli::AuditArgs),
    /// Encrypted volumes under a KMS key (`kura volume create|mount|lock|unlock|status|unmount`).
    Volume(volume_cli::VolumeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Audit(args) => audit_cli::run(args),
        Command::Volume(args) => volume_cli::run(args),
    }
}

/// The default data directory, relative to the working directory.
pub(crate) fn default_data_dir() -> PathBuf {
    PathBuf::from("kura-data")
}
