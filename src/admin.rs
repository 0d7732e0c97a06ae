//! Administration from the command line (`warmstart keys …`): the logic behind the
//! subcommands that are not the server, kept out of `main.rs` so that it is testable.

use std::io::Write;

use anyhow::Context;

use crate::config::{KeysArgs, KeysCommand};
use crate::store::Db;

/// Runs `warmstart keys …`, writing results to `out` (the key itself, or the list) and
/// notes to `note` (stderr in the binary), so `KEY=$(warmstart keys create …)` works.
pub async fn keys(
    args: KeysArgs,
    out: &mut impl Write,
    note: &mut impl Write,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data folder {}", args.data_dir.display()))?;
    let url = crate::config::database_url(args.database_url.as_deref(), &args.data_dir);
    let db = Db::connect(&url).await.with_context(|| {
        format!(
            "cannot open the database {}",
            crate::store::db::redact(&url)
        )
    })?;
    match args.command {
        KeysCommand::Create { name, tenant } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                anyhow::bail!("--name must be 1 to 200 characters");
            }
            let (key, secret) = db.create_key(name, tenant.as_deref()).await?;
            writeln!(out, "{secret}")?;
            writeln!(
                note,
                "created key {} (name {:?}, tenant {:?}); it is shown only this once, store it now. \
                 Send it as `Authorization: Bearer <key>`; every /v1 request now needs a key.",
                key.id, key.name, key.tenant
            )?;
        }
        KeysCommand::List => {
            writeln!(
                out,
                "{:<16}  {:<24}  {:<24}  {:<24}  status",
                "id", "name", "tenant", "created"
            )?;
            for k in db.list_keys().await? {
                let status = match &k.revoked_at {
                    Some(at) => format!("revoked {at}"),
                    None => "active".into(),
                };
                writeln!(
                    out,
                    "{:<16}  {:<24}  {:<24}  {:<24}  {status}",
                    k.id, k.name, k.tenant, k.created_at
                )?;
            }
        }
        KeysCommand::Revoke { id } => {
            if !db.revoke_key(&id).await? {
                anyhow::bail!("no active key with id {id:?}; see `warmstart keys list`");
            }
            writeln!(note, "revoked key {id}; requests with it now get 401")?;
        }
    }
    db.pool.close().await;
    Ok(())
}
