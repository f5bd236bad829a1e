//! The `cairn` command line: `cairn dev` (the server), `cairn send` (PutEvents, then follow the
//! runs it started), `cairn runs` and `cairn runs show ID` (a run's timeline in the terminal).
//! Colour and progress only when stdout is a terminal (and `NO_COLOR` is unset).

use crate::DevError;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Environment a function needs to use the dev server as its EventBridge, Scheduler and SQS and
/// the shared SQLite file as its store: what `cairn dev --watch` passes to `cargo lambda watch`
/// (the same for every function). A function's timer queue is `CAIRN_TIMER_QUEUE_PREFIX` followed
/// by its name (`AWS_LAMBDA_FUNCTION_NAME`, its binary under watch): `<dev url>/000000000000/timer-hello`.
pub fn function_env(dev_url: &str, db_path: &str, bus: &str) -> Vec<(String, String)> {
    let timer_queue_prefix = timer_queue_prefix(dev_url);
    [
        ("AWS_ENDPOINT_URL", dev_url),
        ("AWS_ACCESS_KEY_ID", "cairn-dev"),
        ("AWS_SECRET_ACCESS_KEY", "cairn-dev"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("CAIRN_SQLITE_PATH", db_path),
        ("CAIRN_BUS", bus),
        ("CAIRN_SCHEDULE_GROUP", "cairn"),
        ("CAIRN_SCHEDULER_ROLE_ARN", "arn:aws:iam::000000000000:role/cairn-dev"),
        ("CAIRN_TIMER_QUEUE_PREFIX", &timer_queue_prefix),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The URL prefix of the timer queues the dev server at `dev_url` serves:
/// `<dev url>/000000000000/timer-`.
pub fn timer_queue_prefix(dev_url: &str) -> String {
    format!("{}/{}/{}", dev_url.trim_end_matches('/'), crate::dev::ACCOUNT, crate::template::TIMER_QUEUE_PREFIX)
}

/// Terminal styling, off when not a terminal.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    on: bool,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset.
    pub fn detect() -> Style {
        Style { on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() }
    }

    /// Plain.
    pub fn plain() -> Style {
        Style { on: false }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.on { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    /// Dim text.
    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    /// Bold text.
    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// A status word in its colour.
    pub fn status(self, status: &str) -> String {
        let code = match status {
            "completed" | "ok" => "32",
            "failed" => "31",
            "cancelled" => "90",
            "sleeping" | "waiting" | "scheduled" | "retrying" => "33",
            _ => "36",
        };
        self.paint(code, status)
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, DevError> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|err| DevError::with_source(format!("cannot reach the dev server at {url}: {err}"), err))?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|err| DevError::with_source(format!("{url}: {err}"), err))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(body["error"].as_str().map_or_else(|| format!("{url}: {status}"), str::to_string).into())
    }
}

async fn post_json(url: &str, body: &Value) -> Result<Value, DevError> {
    let response =
        reqwest::Client::new().post(url).json(body).send().await.map_err(|err| {
            DevError::with_source(format!("cannot reach the dev server or console at {url}: {err}"), err)
        })?;
    let status = response.status();
    let answer: Value = response.json().await.map_err(|err| DevError::with_source(format!("{url}: {err}"), err))?;
    if status.is_success() {
        Ok(answer)
    } else {
        Err(answer["error"].as_str().map_or_else(|| format!("{url}: {status}"), str::to_string).into())
    }
}

/// Which runs a bulk operation acts on (`cairn runs cancel` / `cairn runs replay` without an id).
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only this function's runs.
    pub function: Option<String>,
    /// Only runs in this status.
    pub status: Option<String>,
    /// Created at or after (ms since the epoch).
    pub since: Option<i64>,
    /// Created before (ms since the epoch).
    pub until: Option<i64>,
    /// At most this many runs.
    pub limit: usize,
}

impl RunFilter {
    fn to_json(&self) -> Value {
        json!({"function": self.function, "status": self.status, "since": self.since, "until": self.until, "limit": self.limit})
    }
}

/// `cairn runs cancel ID`: cancels one run.
///
/// # Errors
/// The server's refusal (unknown run, ended already), as its message.
pub async fn cancel(url: &str, run_id: &str) -> Result<String, DevError> {
    post_json(&format!("{url}/api/runs/{run_id}/cancel"), &json!({})).await?;
    Ok(format!("cancelled {run_id}"))
}

/// `cairn runs rerun ID [--from failed]`: a new run with the same event; prints its id.
///
/// # Errors
/// The server's refusal (unknown run, no failed step), as its message.
pub async fn rerun(url: &str, run_id: &str, from: &str) -> Result<String, DevError> {
    let answer = post_json(&format!("{url}/api/runs/{run_id}/rerun"), &json!({"from": from})).await?;
    Ok(format!("rerun of {run_id} from {from}: {}", answer["run_id"].as_str().unwrap_or_default()))
}

/// `cairn runs cancel --function F ...` / `cairn runs replay ...`: the bulk operation `action`
/// (`cancel` or `replay`) over what `filter` matches; prints each run acted on and each skipped.
///
/// # Errors
/// A bad filter or an unreachable server, as a message.
pub async fn bulk(url: &str, action: &str, filter: &RunFilter, from: &str, as_json: bool) -> Result<String, DevError> {
    let mut body = filter.to_json();
    body["from"] = json!(from);
    let report = post_json(&format!("{url}/api/runs/{action}"), &body).await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&report).unwrap_or_default());
    }
    let done = report["done"].as_array().cloned().unwrap_or_default();
    let skipped = report["skipped"].as_array().cloned().unwrap_or_default();
    let verb = if action == "cancel" { "cancelled" } else { "replayed" };
    let mut out = format!("{verb} {} of {} matching runs\n", done.len(), report["matched"]);
    for pair in &done {
        match pair[1].as_str() {
            Some(new) => out.push_str(&format!("  {} -> {new}\n", pair[0].as_str().unwrap_or_default())),
            None => out.push_str(&format!("  {}\n", pair[0].as_str().unwrap_or_default())),
        }
    }
    for pair in &skipped {
        out.push_str(&format!(
            "  skipped {}: {}\n",
            pair[0].as_str().unwrap_or_default(),
            pair[1].as_str().unwrap_or_default()
        ));
    }
    Ok(out.trim_end().to_string())
}

/// `cairn invoke FUNCTION --data JSON`: runs one function with an event carrying the data
/// (through the dev server, or a console's stack); prints the run id.
///
/// # Errors
/// Bad data, an unknown function or an unreachable server, as a message.
pub async fn invoke(url: &str, function: &str, data: &str, name: Option<&str>) -> Result<String, DevError> {
    let data: Value =
        serde_json::from_str(data).map_err(|err| DevError::with_source(format!("--data is not JSON: {err}"), err))?;
    if !data.is_object() {
        return Err("--data must be a JSON object".into());
    }
    let answer =
        post_json(&format!("{url}/api/functions/{function}/invoke"), &json!({"data": data, "name": name})).await?;
    Ok(format!("invoked {function}: {}", answer["run_id"].as_str().unwrap_or_default()))
}

/// `cairn send NAME --data JSON`: puts one event on `bus` through the dev server's PutEvents and,
/// with `follow`, waits for the runs it starts to finish (or suspend), showing their progress.
///
/// # Errors
/// Bad data, an unreachable server, or a rejected entry, as a message.
pub async fn send(url: &str, name: &str, data: &str, source: &str, bus: &str, follow: bool) -> Result<(), DevError> {
    let style = Style::detect();
    let data: Value =
        serde_json::from_str(data).map_err(|err| DevError::with_source(format!("--data is not JSON: {err}"), err))?;
    if !data.is_object() {
        return Err("--data must be a JSON object".into());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let id = cairn::new_event_id(now);
    let detail = json!({"name": name, "data": data, "id": id, "ts": now});
    let body =
        json!({"Entries": [{"Source": source, "DetailType": name, "Detail": detail.to_string(), "EventBusName": bus}]});
    let client = reqwest::Client::new();
    let response = client
        .post(url)
        .header("x-amz-target", "AWSEvents.PutEvents")
        .header("content-type", "application/x-amz-json-1.1")
        .body(body.to_string())
        .send()
        .await
        .map_err(|err| {
            DevError::with_source(format!("cannot reach the dev server at {url}: {err} (is `make dev` running?)"), err)
        })?;
    let answer: Value = response.json().await.map_err(DevError::caused_by)?;
    if let Some(message) = answer["message"].as_str() {
        return Err(format!("{}: {message}", answer["__type"].as_str().unwrap_or("error")).into());
    }
    let entry = &answer["Entries"][0];
    if let Some(message) = entry["ErrorMessage"].as_str() {
        return Err(format!("{}: {message}", entry["ErrorCode"].as_str().unwrap_or("error")).into());
    }
    let envelope_id = entry["EventId"].as_str().unwrap_or_default().to_string();
    println!("{} {} {}", style.status("sent"), style.bold(name), style.dim(&format!("event {id}")));
    let detail = get_json(&client, &format!("{url}/api/events/{envelope_id}")).await?;
    let targets: Vec<String> = detail["event"]["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    if targets.is_empty() {
        println!("  {}", style.dim("no rule in template.yaml routes this event"));
        return Ok(());
    }
    println!("  {} {}", style.dim("routed to"), targets.join(", "));
    if !follow {
        return Ok(());
    }
    follow_runs(&client, url, &envelope_id, targets.len(), style).await
}

/// Waits until every delivery of the event is done, then prints what each run did (a run it
/// started, or a waiting run it resumed), with a spinner meanwhile on a terminal.
async fn follow_runs(
    client: &reqwest::Client,
    url: &str,
    event: &str,
    expected: usize,
    style: Style,
) -> Result<(), DevError> {
    let spinner = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut tick = 0usize;
    loop {
        let detail = get_json(client, &format!("{url}/api/events/{event}")).await?;
        let invocations = detail["invocations"].as_array().cloned().unwrap_or_default();
        let done = invocations.len() >= expected
            && invocations.iter().all(|i| matches!(i["status"].as_str(), Some("ok" | "failed")));
        if done || std::time::Instant::now() > deadline {
            if style.on {
                print!("\r\x1b[2K");
            }
            for invocation in &invocations {
                if invocation["status"] == "failed" {
                    return Err(format!(
                        "invoking {} failed after {} attempts: {}",
                        invocation["function"].as_str().unwrap_or_default(),
                        invocation["attempts"],
                        invocation["error"].as_str().unwrap_or_default()
                    )
                    .into());
                }
                for run in invocation["response"]["runs"].as_array().into_iter().flatten() {
                    let run_id = run["run_id"].as_str().unwrap_or_default();
                    let summary = get_json(client, &format!("{url}/api/runs/{run_id}")).await.ok();
                    let (status, function, duration) = match &summary {
                        Some(s) => (
                            s["run"]["status"].as_str().unwrap_or_default().to_string(),
                            s["run"]["function_id"].as_str().unwrap_or_default().to_string(),
                            human_ms(s["run"]["duration_ms"].as_i64().unwrap_or_default()),
                        ),
                        None => (run["status"].as_str().unwrap_or_default().to_string(), String::new(), String::new()),
                    };
                    println!("  {} {} {} {}", style.status(&status), function, style.dim(run_id), style.dim(&duration));
                }
            }
            if !done {
                println!("  {}", style.dim("still running; see `cairn runs`"));
            }
            return Ok(());
        }
        if style.on {
            let line = if invocations.iter().any(|i| i["status"] == "running") {
                "running"
            } else {
                "queued (a function's first invocation compiles it)"
            };
            print!("\r\x1b[2K  {} {}", spinner[tick % spinner.len()], style.dim(line));
            let _ = std::io::stdout().flush();
        }
        tick += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn clock(at: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

/// A duration in ms as people read it.
pub fn human_ms(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms if ms < 3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
        ms => format!("{}h{:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000),
    }
}

/// `cairn runs`: the newest runs, as a table.
///
/// # Errors
/// An unreachable server or a bad filter, as a message.
pub async fn runs(
    url: &str,
    function: Option<&str>,
    status: Option<&str>,
    limit: usize,
    as_json: bool,
) -> Result<String, DevError> {
    let client = reqwest::Client::new();
    let mut query = vec![format!("limit={limit}")];
    if let Some(f) = function {
        query.push(format!("function={f}"));
    }
    if let Some(s) = status {
        query.push(format!("status={s}"));
    }
    let body = get_json(&client, &format!("{url}/api/runs?{}", query.join("&"))).await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&body["runs"]).unwrap_or_default());
    }
    let style = Style::detect();
    let runs = body["runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        return Ok("no runs".to_string());
    }
    let mut out = format!(
        "{:<30}  {:<22}  {:<10}  {:<19}  {:>9}  {}\n",
        "RUN", "FUNCTION", "STATUS", "STARTED", "DURATION", "EVENT"
    );
    for run in runs {
        let status = run["status"].as_str().unwrap_or_default();
        out.push_str(&format!(
            "{:<30}  {:<22}  {}{}  {:<19}  {:>9}  {}\n",
            run["run_id"].as_str().unwrap_or_default(),
            run["function_id"].as_str().unwrap_or_default(),
            style.status(status),
            " ".repeat(10usize.saturating_sub(status.len())),
            clock(run["created_at"].as_i64().unwrap_or_default()),
            human_ms(run["duration_ms"].as_i64().unwrap_or_default()),
            run["event_name"].as_str().unwrap_or_default(),
        ));
    }
    Ok(out.trim_end().to_string())
}

/// `cairn runs show ID`: the run's header and its step timeline, each step with a bar placed in
/// the run's time span, its attempts and its output or error.
///
/// # Errors
/// An unknown run or an unreachable server, as a message.
pub async fn show(url: &str, run_id: &str, as_json: bool, style: Style) -> Result<String, DevError> {
    let client = reqwest::Client::new();
    let body = get_json(&client, &format!("{url}/api/runs/{run_id}")).await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&body).unwrap_or_default());
    }
    Ok(render_timeline(&body, style))
}

/// The terminal timeline of a run (`GET /api/runs/{id}`'s answer).
pub fn render_timeline(body: &Value, style: Style) -> String {
    let run = &body["run"];
    let status = run["status"].as_str().unwrap_or_default();
    let start = run["created_at"].as_i64().unwrap_or_default();
    let end = run["ended_at"].as_i64().or(run["updated_at"].as_i64()).unwrap_or(start);
    let span = (end - start).max(1);
    let mut out = String::new();
    out.push_str(&format!(
        "{} {} {}\n",
        style.bold(run["function_id"].as_str().unwrap_or_default()),
        style.status(status),
        style.dim(run["run_id"].as_str().unwrap_or_default())
    ));
    out.push_str(&format!(
        "  event    {} {}\n  started  {}   duration {}\n",
        run["event_name"].as_str().unwrap_or_default(),
        style.dim(run["event_id"].as_str().unwrap_or_default()),
        clock(start),
        human_ms(end - start)
    ));
    let steps = body["steps"].as_array().cloned().unwrap_or_default();
    if !steps.is_empty() {
        out.push('\n');
    }
    const WIDTH: i64 = 24;
    for step in &steps {
        let step_status = step["status"].as_str().unwrap_or_default();
        let icon = match step_status {
            "completed" => "✓",
            "failed" => "✗",
            "retrying" => "↻",
            _ => "…",
        };
        let from = step["started_at"].as_i64().unwrap_or(start) - start;
        let to = step["ended_at"].as_i64().unwrap_or(end) - start;
        let left = (from * WIDTH / span).clamp(0, WIDTH - 1);
        let length = ((to - from) * WIDTH / span).clamp(1, WIDTH - left);
        let bar = format!(
            "{}{}{}",
            " ".repeat(usize::try_from(left).unwrap_or(0)),
            "█".repeat(usize::try_from(length).unwrap_or(1)),
            " ".repeat(usize::try_from(WIDTH - left - length).unwrap_or(0))
        );
        let outcome = match step_status {
            "completed" if step["output"].is_null() => String::new(),
            "completed" => step["output"].to_string(),
            "failed" | "retrying" => step["error"]["message"].as_str().unwrap_or_default().to_string(),
            _ => step["wake_at"].as_i64().map(|w| format!("until {}", clock(w))).unwrap_or_default(),
        };
        let outcome: String = if outcome.chars().count() > 60 {
            format!("{}…", outcome.chars().take(59).collect::<String>())
        } else {
            outcome
        };
        out.push_str(&format!(
            "  {} {:<20} {:<14} {} {:>8}  {}  {}\n",
            style.status_icon(step_status, icon),
            step["name"].as_str().unwrap_or_default(),
            step["kind"].as_str().unwrap_or_default(),
            style.dim(&format!("│{bar}│")),
            human_ms((to - from).max(0)),
            style.dim(&format!("×{}", step["attempts"])),
            outcome
        ));
    }
    match status {
        "completed" => out.push_str(&format!("\n  output   {}\n", run["output"])),
        "failed" => out.push_str(&format!("\n  error    {}\n", run["error"]["message"].as_str().unwrap_or_default())),
        _ => {}
    }
    if let Some(started_by) = run["started_by"].as_str() {
        out.push_str(&format!("\n  started  by a {started_by}\n"));
    }
    if let Some(reason) = run["reason"].as_str() {
        out.push_str(&format!("\n  why      {reason}\n"));
    }
    out.trim_end().to_string()
}

impl Style {
    fn status_icon(self, status: &str, icon: &str) -> String {
        let code = match status {
            "completed" => "32",
            "failed" => "31",
            _ => "33",
        };
        self.paint(code, icon)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn functions_are_told_the_timer_queue_prefix() {
        let env = function_env("http://127.0.0.1:8288", "/tmp/dev.db", "cairn");
        let prefix = env.iter().find(|(name, _)| name == "CAIRN_TIMER_QUEUE_PREFIX").unwrap();
        assert_eq!(prefix.1, "http://127.0.0.1:8288/000000000000/timer-");
        assert_eq!(timer_queue_prefix("http://localhost:9/"), "http://localhost:9/000000000000/timer-");
    }
}
