//! `corral job ...`: a client of the master's Chronos API, with tables for people and `--json`
//! for scripts.

use anyhow::{Context, Result};
use corral_client::Client;
use serde_json::Value;

use crate::cli::JobCommand;

const API: &str = "/v1/scheduler";

fn call(method: &'static str, path: &str, body: Option<&Value>) -> Result<Value> {
    Ok(Client::from_env()?.marathon(method, &format!("{API}{path}"), body)?)
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// What starts a job: its schedule, or its parents.
fn trigger(j: &Value) -> String {
    let zone = match j["scheduleTimeZone"].as_str() {
        Some(z) if !z.is_empty() => format!(" ({z})"),
        _ => String::new(),
    };
    match (j["parents"].as_array(), j["cron"].as_str()) {
        (Some(p), _) => format!("after {}", p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")),
        (None, Some(c)) => format!("cron {c}{zone}"),
        (None, None) => format!("{}{zone}", j["schedule"].as_str().unwrap_or_default()),
    }
}

pub fn job(cmd: JobCommand) -> Result<()> {
    match cmd {
        JobCommand::Add { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let def: Value =
                serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", file.display()))?;
            let kind = if def.get("parents").is_some() { "dependency" } else { "iso8601" };
            call("POST", &format!("/{kind}"), Some(&def))?;
            println!("job {} saved", def["name"].as_str().unwrap_or("?"));
        }
        JobCommand::Ls(args) => {
            let summary = call("GET", "/jobs/summary", None)?;
            let jobs = call("GET", "/jobs", None)?;
            if args.json {
                return print_json(&jobs);
            }
            println!(
                "{:<24}  {:<44}  {:<9}  {:<10}  {:>7}  {:>6}",
                "NAME", "SCHEDULE", "STATUS", "STATE", "SUCCESS", "ERRORS"
            );
            for j in jobs.as_array().into_iter().flatten() {
                let name = j["name"].as_str().unwrap_or_default();
                let s = summary["jobs"].as_array().into_iter().flatten().find(|s| s["name"] == name);
                let field = |k: &str| s.and_then(|s| s[k].as_str()).unwrap_or("").to_string();
                println!(
                    "{:<24}  {:<44}  {:<9}  {:<10}  {:>7}  {:>6}",
                    name,
                    trigger(j),
                    field("status"),
                    if j["disabled"] == true { "disabled".to_string() } else { field("state") },
                    j["successCount"].as_u64().unwrap_or(0),
                    j["errorCount"].as_u64().unwrap_or(0)
                );
            }
        }
        JobCommand::Show { name, json } => {
            let j = call("GET", &format!("/job/{name}"), None)?;
            if json {
                return print_json(&j);
            }
            println!("name:      {}", j["name"].as_str().unwrap_or_default());
            println!("command:   {}", j["command"].as_str().unwrap_or_default());
            println!("trigger:   {}", trigger(&j));
            println!("retries:   {}", j["retries"]);
            println!("resources: cpus {} mem {} disk {}", j["cpus"], j["mem"], j["disk"]);
            println!("successes: {} (last {})", j["successCount"], j["lastSuccess"].as_str().unwrap_or("-"));
            println!("errors:    {} (last {})", j["errorCount"], j["lastError"].as_str().unwrap_or("-"));
        }
        JobCommand::Run { name } => {
            call("PUT", &format!("/job/{name}"), None)?;
            println!("job {name} started");
        }
        JobCommand::Kill { name } => {
            call("DELETE", &format!("/task/kill/{name}"), None)?;
            println!("runs of job {name} killed");
        }
        JobCommand::Rm { name } => {
            call("DELETE", &format!("/job/{name}"), None)?;
            println!("job {name} removed");
        }
        JobCommand::History { name, json } => {
            let stat = call("GET", &format!("/job/stat/{name}"), None)?;
            if json {
                return print_json(&stat["taskStatHistory"]);
            }
            println!(
                "{:<26}  {:<17}  {:>9}  {:<9}  {:>4}  {:>7}  TASK",
                "DUE", "STARTED", "DURATION", "STATUS", "EXIT", "ATTEMPT"
            );
            for r in stat["taskStatHistory"].as_array().into_iter().flatten() {
                let duration =
                    r["duration"].as_i64().map_or("-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
                println!(
                    "{:<26}  {:<17}  {:>9}  {:<9}  {:>4}  {:>7}  {}",
                    r["scheduledTime"].as_str().unwrap_or_default(),
                    r["startTime"].as_str().unwrap_or_default(),
                    duration,
                    r["status"].as_str().unwrap_or_default(),
                    r["exitCode"].as_i64().map_or("-".to_string(), |c| c.to_string()),
                    r["attempt"].as_u64().unwrap_or(0),
                    r["taskId"].as_str().unwrap_or_default()
                );
            }
        }
        JobCommand::Graph { dot } => {
            let path = if dot { "/graph/dot" } else { "/graph/csv" };
            let text = call("GET", path, None)?;
            let text = text.as_str().unwrap_or_default();
            if dot {
                print!("{text}");
            } else {
                for line in text.lines() {
                    if let Some(rest) = line.strip_prefix("link,") {
                        if let Some((parent, child)) = rest.split_once(',') {
                            println!("{parent} -> {child}");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
