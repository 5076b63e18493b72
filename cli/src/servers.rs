//! `mcpgate servers`: the MCP servers the broker lets you use, as a table
//! (or the broker's JSON) on stdout.

use mcpgate_shared::api::ServerInfo;

use crate::args::{Output, ServersArgs};
use crate::context::Context;
use crate::error::{Error, one_line};
use crate::ui::Spinner;

pub async fn run(args: ServersArgs, ctx: &Context) -> Result<(), Error> {
    let mut login = ctx.login().await?;
    let spinner = Spinner::start(format!("asking {} for servers", login.state.broker));
    let answer = login
        .call(ctx, |client| async move { client.servers().await })
        .await?;
    drop(spinner);
    match args.output.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        ),
        Output::Text => {
            print!("{}", table(&answer.servers));
            if answer.servers.is_empty() {
                eprintln!("no servers are open to your roles; ask an admin for access");
            }
        }
    }
    Ok(())
}

/// `NAME  TRANSPORT  DESCRIPTION`, one server a line, columns aligned.
/// Broker-supplied text is flattened to one line without control
/// characters, so a description cannot redraw the terminal.
fn table(servers: &[ServerInfo]) -> String {
    let rows: Vec<[String; 3]> = servers
        .iter()
        .map(|s| {
            [
                s.name.to_string(),
                one_line(&s.transport, 40),
                one_line(s.description.as_deref().unwrap_or(""), 200),
            ]
        })
        .collect();
    let header = ["NAME", "TRANSPORT", "DESCRIPTION"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    let mut out = String::new();
    for row in std::iter::once(header.map(String::from)).chain(rows) {
        let line = format!("{:<w0$}  {:<w1$}  {}", row[0], row[1], row[2]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_flattens_descriptions() {
        let servers: Vec<ServerInfo> = serde_json::from_str(
            r#"[
                {"name":"demo","transport":"stdio","description":"Demo tools"},
                {"name":"postgres-prod","transport":"http","description":"line\nbreak \u001b[2J"},
                {"name":"x","transport":"stdio"}
            ]"#,
        )
        .unwrap();
        assert_eq!(
            table(&servers),
            "NAME           TRANSPORT  DESCRIPTION\n\
             demo           stdio      Demo tools\n\
             postgres-prod  http       line break [2J\n\
             x              stdio\n"
        );
        assert_eq!(table(&[]), "NAME  TRANSPORT  DESCRIPTION\n");
    }
}
