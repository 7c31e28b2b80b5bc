//! Calls to agents (launch, kill), delivered in order per agent: one queue and one thread per
//! agent address, so a kill never overtakes the launch of the same task. Launches queued together
//! (thousands of jobs due at one minute, an app scaled up) go in batches of up to
//! `BATCH` per request. A launch the agent
//! refuses or cannot be reached for comes back to the owner as `launch_failed`; kills are
//! repeated by the tick until the agent reports the task ended (at least once, never lost).

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::controller::AgentCall;
use super::{AgentLink, Master};
use crate::wire;

pub(super) struct Delivery {
    queues: HashMap<String, Sender<AgentCall>>,
    /// Kills queued and not yet sent, by task: a retry of one of these adds nothing (a slow
    /// agent would otherwise see its queue grow with every retry).
    queued_kills: Arc<Mutex<HashSet<crate::wire::TaskId>>>,
    /// Back to the owner, with what became of a call.
    master: Master,
}

impl Delivery {
    pub(super) fn new(master: Master) -> Delivery {
        Delivery { queues: HashMap::new(), queued_kills: Arc::default(), master }
    }
}

impl AgentLink for Delivery {
    fn send(&mut self, call: AgentCall) {
        if let AgentCall::Kill { task_id, .. } = &call {
            if !self.queued_kills.lock().unwrap_or_else(|p| p.into_inner()).insert(task_id.clone()) {
                return;
            }
        }
        let address = address_of(&call);
        let call = match self.queues.get(&address) {
            Some(q) => match q.send(call) {
                Ok(()) => return,
                // Its thread ended (it could not be started): start another.
                Err(e) => e.0,
            },
            None => call,
        };
        let (tx, rx) = channel::<AgentCall>();
        let master = self.master.clone();
        let queued_kills = self.queued_kills.clone();
        let credentials = self.master.security.agent_credentials();
        let started = std::thread::Builder::new().name("corral-deliver".into()).spawn(move || {
            let agent = match corral_client::Client::with_credentials(&address_of(&call), credentials) {
                Ok(client) => client.timeout(Some(Duration::from_secs(10))),
                Err(e) => {
                    // The master's own certificates do not load: nothing can reach any agent.
                    tracing::error!(error = %e, "no client for agents");
                    return;
                }
            };
            let mut first = Some(call);
            while let Some(call) = first.take().or_else(|| rx.recv().ok()) {
                // What else is queued already goes too, launches together, in order.
                let mut calls = vec![call];
                while calls.len() < BATCH {
                    match rx.try_recv() {
                        Ok(c) => calls.push(c),
                        Err(_) => break,
                    }
                }
                let mut launches = Vec::new();
                for call in calls {
                    match call {
                        AgentCall::Launch { launch, .. } => launches.push(*launch),
                        AgentCall::Kill { address, task_id } => {
                            deliver_launches(&agent, &master, std::mem::take(&mut launches));
                            queued_kills.lock().unwrap_or_else(|p| p.into_inner()).remove(&task_id);
                            deliver(&agent, &master, AgentCall::Kill { address, task_id });
                        }
                    }
                }
                deliver_launches(&agent, &master, launches);
            }
        });
        if let Err(e) = started {
            tracing::error!(error = %e, agent = %address, "could not start a delivery thread; the call is retried later");
            return;
        }
        self.queues.insert(address, tx);
    }
}

/// Launches per request at most.
const BATCH: usize = 500;

/// Sends launches in one request (or one by one to an agent without the batch endpoint).
fn deliver_launches(agent: &corral_client::Client, master: &Master, launches: Vec<wire::Launch>) {
    match launches.len() {
        0 => return,
        1 => {
            let launch = launches.into_iter().next().expect("one");
            let address = agent.base().to_string();
            return deliver(agent, master, AgentCall::Launch { address, launch: Box::new(launch) });
        }
        _ => {}
    }
    let failure = match agent.launch_batch(&launches) {
        Ok(()) => return,
        Err(e) if matches!(e.status(), Some(404 | 405)) => {
            let address = agent.base().to_string();
            for launch in launches {
                deliver(agent, master, AgentCall::Launch { address: address.clone(), launch: Box::new(launch) });
            }
            return;
        }
        Err(e @ corral_client::ClientError::Refused { .. }) => {
            format!("agent {} refused the launch: {e}", agent.base())
        }
        Err(e) => format!("agent {} could not be reached: {e}", agent.base()),
    };
    for launch in launches {
        let (task_id, message) = (launch.task_id, failure.clone());
        tracing::warn!(task = %task_id, %message, "launch failed");
        master.send(move |c, _| c.launch_failed(&task_id, message));
    }
}

fn address_of(call: &AgentCall) -> String {
    match call {
        AgentCall::Launch { address, .. } | AgentCall::Kill { address, .. } => address.clone(),
    }
}

fn deliver(agent: &corral_client::Client, master: &Master, call: AgentCall) {
    match call {
        AgentCall::Launch { address, launch } => {
            let task_id = launch.task_id.clone();
            let failure = match agent.launch(&launch) {
                Ok(()) => None,
                Err(e @ corral_client::ClientError::Refused { .. }) => {
                    Some(format!("agent {address} refused the launch: {e}"))
                }
                Err(e) => Some(format!("agent {address} could not be reached: {e}")),
            };
            if let Some(message) = failure {
                tracing::warn!(task = %task_id, %message, "launch failed");
                master.send(move |c, _| c.launch_failed(&task_id, message));
            }
        }
        AgentCall::Kill { address, task_id } => {
            if let Err(e) = agent.kill_on_agent(&task_id) {
                tracing::warn!(task = %task_id, agent = %address, error = %e, "kill not delivered; it is sent again");
            }
        }
    }
}
