//! `relay-server channels ...`: manage registered channels in the store `--store` names (the
//! data dir, or a PostgreSQL database), beside a server that may be running on it (it reloads
//! within a second).

use std::io::Write;

use anyhow::{Context, bail};
use protocol::ChannelId;

use crate::channel::ChannelRecord;
use crate::channels::{self, Issued};
use crate::config::args::ChannelsCommand;
use crate::config::{Config, derive_public_url};
use crate::store;

/// Runs one `channels` subcommand, printing to `out`.
pub async fn run(
    command: ChannelsCommand,
    config: &Config,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let Some(store) = store::open_beside_server(&config.store).await else {
        bail!(
            "channels are kept in the store, and a --store memory store vanishes with this \
             command: use the admin API (/api/admin/channels) of the running server"
        );
    };
    let store = store?;
    let base = config
        .public_url
        .clone()
        .unwrap_or_else(|| derive_public_url(config.listen, config.tls.is_some()));
    match command {
        ChannelsCommand::Create { name, options } => {
            let name = parse(&name)?;
            let issued = channels::create(store.as_ref(), name, options.settings()?).await?;
            writeln!(out, "Channel {} created.", issued.record.name)?;
            print_issued(out, &base, &issued)?;
        }
        ChannelsCommand::List => {
            let (_, records) = store.channels().await?;
            if records.is_empty() {
                writeln!(
                    out,
                    "No channels registered. Create one with `relay-server channels create NAME`."
                )?;
            }
            let rows: Vec<[String; 4]> = records
                .iter()
                .map(|record| {
                    [
                        record.name.to_string(),
                        humantime::format_rfc3339_seconds(store::from_ms(record.created_at))
                            .to_string(),
                        format!("{base}/h/{}", record.name),
                        describe(record),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                let header = ["NAME", "CREATED", "WEBHOOK URL", "SETTINGS"].map(str::to_owned);
                write_table(out, &header, &rows)?;
            }
        }
        ChannelsCommand::Revoke { name } => {
            let name = parse(&name)?;
            if !store.delete_channel(&name).await? {
                bail!("no channel {name}");
            }
            writeln!(
                out,
                "Channel {name} revoked: its token no longer works, and a running server \
                 disconnects its agents within a second. Its events stay until retention \
                 removes them."
            )?;
        }
        ChannelsCommand::Update { name, options } => {
            let name = parse(&name)?;
            let change = options.change().map_err(anyhow::Error::msg)?;
            if change.is_empty() {
                bail!(
                    "nothing to change: give --mode, --rate-limit, --allow-from, --allow-any, \
                     --verify, --no-verify or --event-type"
                );
            }
            let record = channels::update(store.as_ref(), &name, change).await?;
            writeln!(
                out,
                "Channel {name} updated; its token and agents stay, and a running server \
                 applies the change within a second."
            )?;
            writeln!(out, "  settings     {}", describe(&record))?;
        }
        ChannelsCommand::Rotate { name } => {
            let name = parse(&name)?;
            let issued = channels::rotate(store.as_ref(), &name).await?;
            writeln!(
                out,
                "Channel {name} has a new token; the old one no longer works, and a running \
                 server disconnects the agents holding it within a second."
            )?;
            print_issued(out, &base, &issued)?;
        }
    }
    Ok(())
}

fn parse(name: &str) -> anyhow::Result<ChannelId> {
    ChannelId::parse(name).with_context(|| format!("{name:?} is not a valid channel name"))
}

/// A channel's settings in one line: `mode balance, pace 10/s, from 192.0.2.0/24`.
fn describe(record: &ChannelRecord) -> String {
    let settings = &record.settings;
    let mut parts = vec![format!("mode {}", settings.mode.as_str())];
    parts.push(match settings.rate_limit {
        Some(rate) => format!("pace {rate}"),
        None => "pace: server default".to_owned(),
    });
    if let Some(verify) = &settings.verify {
        parts.push(format!("verify {}", verify.kind()));
    }
    if let Some(source) = &settings.event_type {
        parts.push(format!("event type from {source}"));
    }
    if !settings.allow_from.is_empty() {
        let nets: Vec<String> = settings
            .allow_from
            .iter()
            .map(ToString::to_string)
            .collect();
        parts.push(format!("from {}", nets.join(" ")));
    }
    parts.join(", ")
}

/// Rows under a header, each column as wide as its widest cell (the last one unpadded).
fn write_table(
    out: &mut impl Write,
    header: &[String; 4],
    rows: &[[String; 4]],
) -> anyhow::Result<()> {
    let mut widths = header.clone().map(|cell| cell.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

fn print_issued(out: &mut impl Write, base: &str, issued: &Issued) -> anyhow::Result<()> {
    let name = &issued.record.name;
    writeln!(out, "  webhook URL  {base}/h/{name}")?;
    writeln!(
        out,
        "  token        {}   (shown once: only its hash is kept)",
        issued.token
    )?;
    writeln!(out, "  settings     {}", describe(&issued.record))?;
    writeln!(out)?;
    writeln!(out, "Run an agent for it with:")?;
    writeln!(
        out,
        "  relay-client --server {base} --channel {name} --token {} --forward http://localhost:3000",
        issued.token
    )?;
    Ok(())
}
