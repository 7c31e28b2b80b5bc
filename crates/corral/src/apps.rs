//! `corral app ...` and `corral deployments`: a client of the master's Marathon API, with
//! tables for people and `--json` for scripts.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cli::{AppCommand, JsonArgs};

/// Calls the master's Marathon API; a Marathon error body becomes a one-line error with its
/// details.
fn call(method: &'static str, path: &str, body: Option<&Value>) -> Result<Value> {
    Ok(corral_client::Client::from_env()?.marathon(method, path, body)?)
}

fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_start_matches('/'))
}

fn force(f: bool) -> &'static str {
    if f {
        "?force=true"
    } else {
        ""
    }
}

fn print_change(v: &Value) {
    println!(
        "deployment {} (version {})",
        v["deploymentId"].as_str().unwrap_or("?"),
        v["version"].as_str().unwrap_or("?")
    );
}

pub fn app(cmd: AppCommand) -> Result<()> {
    match cmd {
        AppCommand::Deploy { file, force: f } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let yaml = matches!(Path::new(&file).extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
            let def = corral_services::wire::decode_value(&bytes, yaml)
                .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.message))?;
            let id = def.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            if id.is_empty() {
                bail!("{}: the app definition has no id", file.display());
            }
            let sep = if f { "&" } else { "?" };
            let path = format!("{}{}{sep}partialUpdate=false", app_path(&id), force(f));
            print_change(&call("PUT", &path, Some(&def))?);
        }
        AppCommand::Ls(args) => {
            let v = call("GET", "/v2/apps", None)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&v["apps"])?);
                return Ok(());
            }
            println!("{:<28}  {:>9}  {:>6}  {:>7}  {:<10}  WHAT", "ID", "RUNNING", "CPUS", "MEM", "DEPLOYING");
            for a in v["apps"].as_array().into_iter().flatten() {
                let what = a["container"]["docker"]["image"]
                    .as_str()
                    .map(|i| format!("{i} {}", a["cmd"].as_str().unwrap_or("")))
                    .unwrap_or_else(|| a["cmd"].as_str().unwrap_or("").to_string());
                println!(
                    "{:<28}  {:>9}  {:>6}  {:>7}  {:<10}  {}",
                    a["id"].as_str().unwrap_or(""),
                    format!("{}/{}", a["tasksRunning"], a["instances"]),
                    a["cpus"],
                    a["mem"],
                    if a["deployments"].as_array().is_some_and(|d| !d.is_empty()) { "yes" } else { "no" },
                    what.trim()
                );
            }
        }
        AppCommand::Show { id, json } => {
            let v = call("GET", &app_path(&id), None)?;
            let a = &v["app"];
            if json {
                println!("{}", serde_json::to_string_pretty(a)?);
                return Ok(());
            }
            println!("id:         {}", a["id"].as_str().unwrap_or(""));
            println!("version:    {}", a["version"].as_str().unwrap_or(""));
            println!(
                "instances:  {} wanted, {} running, {} staged",
                a["instances"], a["tasksRunning"], a["tasksStaged"]
            );
            println!("resources:  cpus {} mem {} disk {}", a["cpus"], a["mem"], a["disk"]);
            if let Some(i) = a["container"]["docker"]["image"].as_str() {
                println!("image:      {i}");
            }
            if let Some(c) = a["cmd"].as_str() {
                println!("cmd:        {c}");
            }
            if let Some(f) = a.get("lastTaskFailure") {
                println!("last failure: {} {} {}", f["taskId"], f["state"], f["message"]);
            }
            println!();
            println!("{:<48}  {:<14}  {:<16}  {:<12}  PORTS", "TASK", "STATE", "HOST", "HEALTH");
            for t in a["tasks"].as_array().into_iter().flatten() {
                let health = match t["healthCheckResults"][0]["alive"].as_bool() {
                    Some(true) => "healthy",
                    Some(false) => "unhealthy",
                    None => "-",
                };
                let ports: Vec<String> = t["ports"].as_array().into_iter().flatten().map(|p| p.to_string()).collect();
                println!(
                    "{:<48}  {:<14}  {:<16}  {:<12}  {}",
                    t["id"].as_str().unwrap_or(""),
                    t["state"].as_str().unwrap_or(""),
                    t["host"].as_str().unwrap_or(""),
                    health,
                    ports.join(",")
                );
            }
        }
        AppCommand::Scale { id, instances, force: f } => {
            print_change(&call(
                "PUT",
                &format!("{}{}", app_path(&id), force(f)),
                Some(&json!({ "instances": instances })),
            )?);
        }
        AppCommand::Restart { id, force: f } => {
            print_change(&call("POST", &format!("{}/restart{}", app_path(&id), force(f)), None)?);
        }
        AppCommand::Rollback { id, version, force: f } => {
            let version = match version {
                Some(v) => v,
                None => {
                    let v = call("GET", &format!("{}/versions", app_path(&id)), None)?;
                    let versions: Vec<&str> =
                        v["versions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    match versions.get(1) {
                        Some(v) => v.to_string(),
                        None => bail!("app {id} has no earlier version to roll back to"),
                    }
                }
            };
            print_change(&call(
                "PUT",
                &format!("{}{}", app_path(&id), force(f)),
                Some(&json!({ "version": version })),
            )?);
        }
        AppCommand::Rm { id, force: f } => {
            print_change(&call("DELETE", &format!("{}{}", app_path(&id), force(f)), None)?);
        }
        AppCommand::Why { id, json } => why(&id, json)?,
    }
    Ok(())
}

/// Explains what holds an app back: its launch delay, its deployment, and each recent
/// offer's reasons, per agent.
fn why(id: &str, as_json: bool) -> Result<()> {
    let app = call("GET", &app_path(id), None)?;
    let app = &app["app"];
    let queue = call("GET", "/v2/queue?embed=lastUnusedOffers", None)?;
    let full_id = app["id"].as_str().unwrap_or(id).to_string();
    let item = queue["queue"].as_array().into_iter().flatten().find(|q| q["app"]["id"].as_str() == Some(&full_id));
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!({"app": full_id, "queue": item}))?);
        return Ok(());
    }
    let wanted = app["instances"].as_u64().unwrap_or(0);
    let running = app["tasksRunning"].as_u64().unwrap_or(0);
    println!("{full_id}: {running} of {wanted} instances running");
    // Tasks placed but not running yet: what they wait for (an image pull, say).
    let tasks = call("GET", &format!("{}/tasks", app_path(&full_id)), None)?;
    let staging: Vec<String> = tasks["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| matches!(t["state"].as_str(), Some("TASK_STAGING" | "TASK_STARTING")))
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    if !staging.is_empty() {
        let native = corral_client::Client::from_env()?.tasks()?;
        for t in native.iter().filter(|t| staging.iter().any(|s| *s == t.id.as_str())) {
            let reason = t.message.as_deref().unwrap_or("placed, waiting for its agent");
            println!("task {} on agent {}: {}: {reason}", t.id, t.agent.as_deref().unwrap_or("?"), t.state.as_str());
        }
    }
    let Some(item) = item else {
        println!("nothing is waiting to launch");
        return Ok(());
    };
    println!("{} instance(s) waiting for an offer since {}", item["count"], item["since"].as_str().unwrap_or("?"));
    let delay = item["delay"]["timeLeftSeconds"].as_u64().unwrap_or(0);
    if delay > 0 {
        println!("launches are delayed {delay}s more: the app's tasks failed (backoffSeconds, backoffFactor)");
    }
    let summary = &item["processedOffersSummary"];
    if let Some(q) = summary["roleQuota"].as_str() {
        println!("{q}");
    }
    if summary["processedOffersCount"].as_u64() == Some(0) {
        println!(
            "no offer has reached this app yet: no agent has free resources for role {:?} (see `corral agents`, `corral roles`)",
            app["role"].as_str().unwrap_or("*")
        );
    }
    for r in summary["rejectSummaryLastOffers"].as_array().into_iter().flatten() {
        if r["declined"].as_u64().unwrap_or(0) > 0 {
            println!(
                "  {:<32} declined {} of {} offers",
                r["reason"].as_str().unwrap_or(""),
                r["declined"],
                r["processed"]
            );
        }
    }
    let offers = item["lastUnusedOffers"].as_array().cloned().unwrap_or_default();
    if !offers.is_empty() {
        println!();
        println!("{:<20}  {:<24}  WHY NOT", "AGENT", "AT");
        let mut seen = std::collections::BTreeSet::new();
        for o in offers.iter().rev() {
            let agent = o["offer"]["hostname"].as_str().unwrap_or("").to_string();
            if !seen.insert(agent.clone()) {
                continue;
            }
            let details: Vec<&str> = o["details"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            println!("{:<20}  {:<24}  {}", agent, o["timestamp"].as_str().unwrap_or(""), details.join("; "));
        }
    }
    Ok(())
}

pub fn deployments(args: JsonArgs) -> Result<()> {
    let v = call("GET", "/v2/deployments", None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<36}  {:<24}  {:>5}  {:<24}  CURRENT", "ID", "VERSION", "STEP", "APPS");
    for d in v.as_array().into_iter().flatten() {
        let apps: Vec<&str> = d["affectedApps"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let current: Vec<String> = d["currentActions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| format!("{} {}", a["action"].as_str().unwrap_or(""), a["app"].as_str().unwrap_or("")))
            .collect();
        println!(
            "{:<36}  {:<24}  {:>5}  {:<24}  {}",
            d["id"].as_str().unwrap_or(""),
            d["version"].as_str().unwrap_or(""),
            format!("{}/{}", d["currentStep"], d["totalSteps"]),
            apps.join(","),
            current.join(", ")
        );
    }
    Ok(())
}
