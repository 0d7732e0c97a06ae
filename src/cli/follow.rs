//! `jobs create --follow` / `jobs follow`: reads the job's server-sent event stream
//! (`GET /v1/jobs/{id}/events` with `Accept: text/event-stream`) and drives a progress bar
//! from it: one step per recipe stage, the epoch and its losses as the message. When the
//! stream ends (the job ended, or the connection dropped) the job is read once more; if it
//! has not ended, the stream is resumed after the last event seen (`Last-Event-ID`).
//!
//! Without a terminal on stderr the bar is hidden and each stage is printed as a line.

use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;

use super::client::{CliError, CliResult, Client, parse};
use super::types::{Job, JobEvent};

/// The recipe's stages in order (a job may skip some).
const STAGES: [&str; 5] = [
    "preparing",
    "extracting_features",
    "training_head",
    "finetuning",
    "evaluating",
];

/// Reconnections tried when the stream drops before the job ends.
const RECONNECTS: u32 = 10;

/// Follows job `id` until it ends; returns the finished job.
pub async fn follow(client: &Client, id: &str) -> CliResult<Job> {
    let bar = progress_bar(client.json);
    let mut last_seq = 0;
    let mut drops = 0;
    loop {
        let result = stream_once(client, id, &mut last_seq, &bar).await;
        let job: Job = parse(client.get(&format!("/v1/jobs/{id}")).await?)?;
        if job.is_terminal() {
            bar.finish_and_clear();
            return Ok(job);
        }
        drops += 1;
        if drops > RECONNECTS {
            bar.abandon();
            return Err(result.err().unwrap_or_else(|| {
                CliError::Other(format!("the event stream of job {id} kept ending early"))
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(STAGES.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Reads one connection's worth of events.
async fn stream_once(
    client: &Client,
    id: &str,
    last_seq: &mut i64,
    bar: &ProgressBar,
) -> CliResult<()> {
    let req = client
        .request(Method::GET, &format!("/v1/jobs/{id}/events"))
        .header("accept", "text/event-stream")
        .header("last-event-id", last_seq.to_string());
    let resp = client.send(req).await?;
    let mut body = resp.bytes_stream();
    let mut buffer = String::new();
    let mut last_line = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| client.transport(e))?;
        buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(event) = parse_frame(&frame) {
                *last_seq = (*last_seq).max(event.seq);
                show(bar, &event, &mut last_line);
            }
        }
    }
    Ok(())
}

/// One SSE frame's `data:` lines as an event; comments (keep-alives) and frames that are
/// not job events give `None`.
fn parse_frame(frame: &str) -> Option<JobEvent> {
    let data: Vec<&str> = frame
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

/// Moves the bar for one event (or, when the bar is hidden, prints a line unless it repeats
/// `last_line`).
fn show(bar: &ProgressBar, e: &JobEvent, last_line: &mut String) {
    if let Some(stage) = e.stage.as_deref()
        && let Some(i) = STAGES.iter().position(|s| *s == stage)
    {
        bar.set_position(i as u64);
    }
    let stage = e.stage.as_deref().unwrap_or("");
    let message = match e.kind.as_str() {
        "epoch" => {
            let m = e.metrics.as_ref();
            let mut msg = format!("{stage} epoch {}", e.epoch.unwrap_or(0));
            if let Some(l) = m.and_then(|m| m.train_loss) {
                msg.push_str(&format!("  train loss {l:.4}"));
            }
            if let Some(l) = m.and_then(|m| m.val_loss) {
                msg.push_str(&format!("  val loss {l:.4}"));
            }
            if let Some(a) = m.and_then(|m| m.val_accuracy) {
                msg.push_str(&format!("  val acc {a:.3}"));
            }
            msg
        }
        "succeeded" | "failed" | "cancelled" => {
            bar.set_position(STAGES.len() as u64);
            e.message.clone().unwrap_or_default()
        }
        kind => format!("{stage} {}", e.message.as_deref().unwrap_or(kind)),
    };
    if bar.is_hidden() {
        // Epochs are many; without a bar the stages and the end are enough.
        let line = format!("{} {}", e.kind, message.trim());
        if e.kind != "epoch" && e.kind != "log" && line != *last_line {
            eprintln!("{line}");
            *last_line = line;
        }
    } else {
        bar.set_message(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_keep_alives_are_skipped() {
        let frame = "id: 3\nevent: stage\ndata: {\"seq\":3,\"kind\":\"stage\",\"stage\":\"training_head\",\"epoch\":null,\"metrics\":null,\"message\":\"m\"}\n\n";
        let e = parse_frame(frame).unwrap();
        assert_eq!((e.seq, e.kind.as_str()), (3, "stage"));
        assert_eq!(e.stage.as_deref(), Some("training_head"));
        assert!(parse_frame(":\n\n").is_none());
    }
}
