//! `csirt report`: the evaluation for 情報戦略本部, written to stdout or a file.

use super::output::Output;
use super::{Cli, ReportArgs, load_config, open_store};
use crate::report::period::{Period, Span, fiscal_year_of};
use std::process::ExitCode;

pub(super) async fn run(cli: &Cli, args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let (_, config) = load_config(cli)?;
    let tz = config.timezone;
    let now = crate::model::now();
    let span = match (args.fiscal_year, args.month, args.from, args.to) {
        (Some(year), ..) => Span::FiscalYear(year),
        (_, Some(month), ..) => month,
        (_, _, Some(from), Some(to)) => Span::Days { from, to },
        // Without a period: the fiscal year so far.
        _ => Span::FiscalYear(fiscal_year_of(now.with_timezone(&tz).date_naive())),
    };
    let period = match Period::new(span, tz) {
        Ok(period) => period,
        Err(e) => {
            // A period that cannot be made is a usage error, like one clap refuses.
            eprintln!("csirt: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    // The deadlines need the playbooks; a report without them still says everything else.
    let contacts = config.contacts.keys().cloned().collect();
    let playbooks = match crate::playbook::load(&config.playbooks, Some(&contacts)) {
        Ok(set) => Some(set),
        Err(errors) => {
            eprintln!(
                "csirt: warning: the playbooks in {} do not load ({} error(s), see `csirt playbooks check`): \
                 deadlines are not evaluated",
                config.playbooks.display(),
                errors.0.len()
            );
            None
        }
    };
    let store = open_store(&config).await?;
    let report =
        crate::report::gather::gather(&store, &period, playbooks.as_ref(), &config.levels(), now)
            .await?;
    let bytes = report.render(args.format.into());
    let mut out = Output::stdout(tz);
    match &args.out {
        Some(path) => {
            std::fs::write(path, &bytes)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            out.line(&format!(
                "{}: {} ({} incidents)",
                path.display(),
                report.current.period.label,
                report.current.incidents
            ))?;
        }
        None => out.bytes(&bytes)?,
    }
    Ok(ExitCode::SUCCESS)
}
