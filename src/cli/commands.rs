//! What each client subcommand does: one API call or a few, then human output (or the
//! server's JSON with `--json`).

use std::path::Path;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Map, Value, json};

use super::client::{CliError, CliResult, Client, parse};
use super::types::{Job, Predictions};
use super::{
    ClientCommand, DatasetsCommand, JobsCommand, ModelsCommand, PredictArgs, follow, output,
};

pub async fn dispatch(command: ClientCommand) -> CliResult<()> {
    match command {
        ClientCommand::Datasets(a) => datasets(&Client::new(&a.remote)?, a.command).await,
        ClientCommand::Jobs(a) => jobs(&Client::new(&a.remote)?, a.command).await,
        ClientCommand::Predict(a) => predict(&Client::new(&a.remote)?, a).await,
        ClientCommand::Models(a) => models(&Client::new(&a.remote)?, a.command).await,
    }
}

/// Prints the raw JSON with `--json`, else the human rendering of its typed form.
fn print<T: serde::de::DeserializeOwned>(
    client: &Client,
    value: Value,
    human: impl FnOnce(&T) -> String,
) -> CliResult<()> {
    if client.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print!("{}", human(&parse::<T>(value)?));
    }
    Ok(())
}

fn print_list<T: serde::de::DeserializeOwned>(
    client: &Client,
    items: Vec<Value>,
    human: impl FnOnce(&[T]) -> String,
) -> CliResult<()> {
    print::<Vec<T>>(client, Value::Array(items), |list| human(list))
}

async fn datasets(client: &Client, command: DatasetsCommand) -> CliResult<()> {
    match command {
        DatasetsCommand::Upload { file, name } => {
            let mut form = Form::new().part("file", file_part(&file).await?);
            if let Some(name) = name {
                form = form.text("name", name);
            }
            let req = client.request(Method::POST, "/v1/datasets").multipart(form);
            print(client, client.send_json(req).await?, output::dataset)
        }
        DatasetsCommand::List => {
            print_list(client, client.list("/v1/datasets").await?, output::datasets)
        }
        DatasetsCommand::Get { id } => print(
            client,
            client.get(&format!("/v1/datasets/{id}")).await?,
            output::dataset,
        ),
    }
}

/// A local file as a streamed multipart `file` part.
async fn file_part(path: &Path) -> CliResult<Part> {
    let unreadable =
        |e: std::io::Error| CliError::Usage(format!("cannot read {}: {e}", path.display()));
    let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let meta = file.metadata().await.map_err(unreadable)?;
    if !meta.is_file() {
        return Err(CliError::Usage(format!("{} is not a file", path.display())));
    }
    let name = path
        .file_name()
        .map_or_else(|| "upload".into(), |n| n.to_string_lossy().into_owned());
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    Ok(Part::stream_with_length(body, meta.len()).file_name(name))
}

/// `--param KEY=VALUE` pairs as the `hyperparameters` object (VALUE as JSON when it parses).
fn hyperparameters(params: &[String]) -> CliResult<Map<String, Value>> {
    let mut out = Map::new();
    for p in params {
        let (key, value) = p.split_once('=').ok_or_else(|| {
            CliError::Usage(format!(
                "--param {p:?} must be KEY=VALUE, e.g. finetune_epochs=0"
            ))
        })?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        out.insert(key.trim().to_string(), value);
    }
    Ok(out)
}

async fn jobs(client: &Client, command: JobsCommand) -> CliResult<()> {
    match command {
        JobsCommand::Create {
            dataset,
            backbone,
            params,
            seed,
            follow,
        } => {
            let mut body = json!({"dataset_id": dataset});
            if let Some(b) = backbone {
                body["backbone"] = json!(b);
            }
            if !params.is_empty() {
                body["hyperparameters"] = Value::Object(hyperparameters(&params)?);
            }
            if let Some(seed) = seed {
                body["seed"] = json!(seed);
            }
            let req = client.request(Method::POST, "/v1/jobs").json(&body);
            let created = client.send_json(req).await?;
            if !follow {
                return print(client, created, |j: &Job| {
                    format!(
                        "{}\n  follow it with: warmstart jobs follow {}\n",
                        output::job_line(j),
                        j.id
                    )
                });
            }
            let job: Job = parse(created)?;
            if !client.json {
                println!("{}", output::job_line(&job));
            }
            follow_job(client, &job.id).await
        }
        JobsCommand::Follow { id } => follow_job(client, &id).await,
        JobsCommand::Get { id } => print(
            client,
            client.get(&format!("/v1/jobs/{id}")).await?,
            output::job,
        ),
        JobsCommand::List => print_list(client, client.list("/v1/jobs").await?, output::jobs),
        JobsCommand::Cancel { id } => {
            let req = client.request(Method::POST, &format!("/v1/jobs/{id}/cancel"));
            print(client, client.send_json(req).await?, |j: &Job| {
                output::job_line(j) + "\n"
            })
        }
    }
}

/// Follows a job to its end, prints it, and fails (exit 4) unless it succeeded.
async fn follow_job(client: &Client, id: &str) -> CliResult<()> {
    follow::follow(client, id).await?;
    // The finished job as the server shows it (typed for the check, raw for --json).
    let value = client.get(&format!("/v1/jobs/{id}")).await?;
    let job: Job = parse(value.clone())?;
    print(client, value, output::job)?;
    if job.status == "succeeded" {
        return Ok(());
    }
    let detail = job.error.map_or_else(
        || "no error recorded".to_string(),
        |e| format!("{}: {}", e.code, e.message),
    );
    Err(CliError::JobFailed {
        id: job.id,
        status: job.status,
        detail,
    })
}

async fn predict(client: &Client, args: PredictArgs) -> CliResult<()> {
    let path = format!("/v1/models/{}/predict", args.model);
    let (req, shown) = match (args.texts.is_empty(), args.images.is_empty()) {
        (false, true) => {
            let mut body = json!({"inputs": args.texts});
            if let Some(k) = args.top_k {
                body["top_k"] = json!(k);
            }
            (client.request(Method::POST, &path).json(&body), args.texts)
        }
        (true, false) => {
            let mut form = Form::new();
            for image in &args.images {
                form = form.part("file", file_part(image).await?);
            }
            if let Some(k) = args.top_k {
                form = form.text("top_k", k.to_string());
            }
            let shown = args
                .images
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            (client.request(Method::POST, &path).multipart(form), shown)
        }
        (true, true) => {
            return Err(CliError::Usage(
                "nothing to predict: give texts as arguments, or --image FILE".into(),
            ));
        }
        (false, false) => {
            return Err(CliError::Usage(
                "give texts or --image files, not both (a model is text or image)".into(),
            ));
        }
    };
    print(client, client.send_json(req).await?, |p: &Predictions| {
        output::predictions(&shown, &p.predictions)
    })
}

async fn models(client: &Client, command: ModelsCommand) -> CliResult<()> {
    match command {
        ModelsCommand::List => print_list(client, client.list("/v1/models").await?, output::models),
        ModelsCommand::Get { id } => print(
            client,
            client.get(&format!("/v1/models/{id}")).await?,
            output::model,
        ),
        ModelsCommand::Download { id, output } => {
            let path = output.unwrap_or_else(|| format!("warmstart-model-{id}.zip").into());
            let bytes = download(client, &id, &path).await?;
            if client.json {
                println!("{}", json!({"id": id, "path": path, "bytes": bytes}));
            } else {
                println!("saved model {id} to {} ({bytes} bytes)", path.display());
            }
            Ok(())
        }
    }
}

/// Streams the archive into `path` (through a temporary name, so a failed download leaves
/// no partial file under it); returns its size.
async fn download(client: &Client, id: &str, path: &Path) -> CliResult<u64> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let req = client.request(Method::GET, &format!("/v1/models/{id}/download"));
    let resp = client.send(req).await?;
    let partial = path.with_extension("zip.part");
    let cannot_write =
        |e: std::io::Error| CliError::Other(format!("cannot write {}: {e}", path.display()));
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(cannot_write)?;
    let mut written = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(client.transport(e));
            }
        };
        file.write_all(&chunk).await.map_err(cannot_write)?;
        written += chunk.len() as u64;
    }
    file.flush().await.map_err(cannot_write)?;
    drop(file);
    tokio::fs::rename(&partial, path)
        .await
        .map_err(cannot_write)?;
    Ok(written)
}
