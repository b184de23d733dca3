//! `fidius package …`: the subcommands that work on one package directory or archive.

use clap::Subcommand;

use super::inspect::InspectCommand;
use super::pack::PackCommand;
use super::rust_plugin::BuildCommand;
use super::sign::SignCommand;
use super::unpack::UnpackCommand;
use super::validate::ValidateCommand;
use super::verify::VerifyCommand;

#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    Pack(PackCommand),
    Unpack(UnpackCommand),
    Sign(SignCommand),
    Verify(VerifyCommand),
    Inspect(InspectCommand),
    Validate(ValidateCommand),
    Build(BuildCommand),
}

impl PackageCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            PackageCommand::Pack(command) => command.execute(),
            PackageCommand::Unpack(command) => command.execute(),
            PackageCommand::Sign(command) => command.execute(),
            PackageCommand::Verify(command) => command.execute(),
            PackageCommand::Inspect(command) => command.execute(),
            PackageCommand::Validate(command) => command.execute(),
            PackageCommand::Build(command) => command.execute(),
        }
    }
}
