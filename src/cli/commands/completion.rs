//! `capi completion SHELL` and `capi man`: generated from the clap
//! definitions, so they never drift from the real flags.

use clap::CommandFactory;

use super::super::args::Cli;
use super::super::output::Printer;
use super::super::ExitStatus;

pub(crate) fn completion(shell: clap_complete::Shell, p: &Printer) -> ExitStatus {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "capi", &mut buf);
    p.data(&String::from_utf8_lossy(&buf));
    ExitStatus::Success
}

pub(crate) fn man(p: &Printer) -> ExitStatus {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = clap_mangen::Man::new(Cli::command()).render(&mut buf);
    p.data(&String::from_utf8_lossy(&buf));
    ExitStatus::Success
}
