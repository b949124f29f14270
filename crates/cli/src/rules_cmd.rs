//! Placeholder, replaced by the subcommand's implementation.

/// Rules subcommands.
#[derive(clap::Subcommand)]
pub enum RulesCommand {}

/// Runs the subcommand.
pub fn run(command: RulesCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {}
}
