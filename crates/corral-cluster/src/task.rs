//! Task states, as in Mesos, and the one function that moves a task between them.

pub use corral_client::wire::TaskState;

/// What happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    /// The agent reported this state.
    Reported(TaskState),
    /// Someone asked to kill it.
    KillRequested,
    /// Its agent stopped answering.
    AgentUnreachable,
    /// Its agent came back and still runs it.
    AgentReturned,
    /// Its agent came back without it, or the launch could not be delivered.
    AgentLost,
    /// Its agent was removed for good.
    AgentGone,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a task in state {from:?} cannot take {event:?}")]
pub struct TransitionError {
    pub from: TaskState,
    pub event: TaskEvent,
}

/// The task lifecycle. Terminal states never change; reports never move a task backwards.
pub fn transition(from: TaskState, event: TaskEvent) -> Result<TaskState, TransitionError> {
    use TaskEvent as E;
    use TaskState as S;
    let bad = || TransitionError { from, event };
    if from.is_terminal() {
        return Err(bad());
    }
    Ok(match (from, event) {
        (S::Staging, E::Reported(S::Starting)) => S::Starting,
        (S::Staging | S::Starting | S::Unreachable, E::Reported(S::Running)) => S::Running,
        (S::Killing, E::Reported(S::Running | S::Starting)) => S::Killing,
        (_, E::Reported(s @ (S::Finished | S::Failed | S::Killed | S::Error | S::Lost))) => {
            // A task asked to die that then dies is KILLED, whatever its exit.
            if from == S::Killing && matches!(s, S::Finished | S::Failed) {
                S::Killed
            } else {
                s
            }
        }
        (S::Staging | S::Starting | S::Running | S::Unreachable, E::KillRequested) => S::Killing,
        (S::Killing, E::KillRequested) => S::Killing,
        (S::Staging | S::Starting | S::Running | S::Killing, E::AgentUnreachable) => S::Unreachable,
        (S::Unreachable, E::AgentReturned) => S::Running,
        (_, E::AgentLost) => S::Lost,
        (_, E::AgentGone) => S::Gone,
        _ => return Err(bad()),
    })
}

/// How a task ended, from how its container did: asked to die (`killed`), never started
/// (`start_failed`), or exited with `code` (the shell's: 128 + signal when killed by one).
pub fn ended_state(killed: bool, start_failed: bool, code: i32) -> TaskState {
    match (killed, start_failed, code) {
        (true, _, _) => TaskState::Killed,
        (false, true, _) => TaskState::Error,
        (false, false, 0) => TaskState::Finished,
        (false, false, _) => TaskState::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn how_tasks_end() {
        let check = |killed, start_failed, code, want| {
            assert_eq!(
                ended_state(killed, start_failed, code),
                want,
                "killed {killed}, start failed {start_failed}, code {code}"
            );
        };
        check(false, false, 0, TaskState::Finished);
        check(false, false, 1, TaskState::Failed);
        check(false, false, 137, TaskState::Failed);
        check(false, true, 125, TaskState::Error);
        check(true, false, 0, TaskState::Killed);
        check(true, false, 143, TaskState::Killed);
        check(true, true, 125, TaskState::Killed);
    }
    use TaskEvent as E;
    use TaskState as S;

    fn check(from: S, event: E, want: Option<S>) {
        assert_eq!(transition(from, event).ok(), want, "{from:?} + {event:?}");
    }

    #[test]
    fn lifecycle() {
        check(S::Staging, E::Reported(S::Starting), Some(S::Starting));
        check(S::Starting, E::Reported(S::Running), Some(S::Running));
        check(S::Running, E::Reported(S::Finished), Some(S::Finished));
        check(S::Running, E::Reported(S::Failed), Some(S::Failed));
        check(S::Running, E::KillRequested, Some(S::Killing));
        check(S::Killing, E::Reported(S::Failed), Some(S::Killed));
        check(S::Killing, E::Reported(S::Running), Some(S::Killing));
        check(S::Running, E::AgentUnreachable, Some(S::Unreachable));
        check(S::Unreachable, E::AgentReturned, Some(S::Running));
        check(S::Unreachable, E::AgentLost, Some(S::Lost));
        check(S::Staging, E::Reported(S::Error), Some(S::Error));
        // Never backwards, never out of a terminal state.
        check(S::Running, E::Reported(S::Starting), None);
        check(S::Finished, E::Reported(S::Running), None);
        check(S::Killed, E::KillRequested, None);
        check(S::Lost, E::AgentReturned, None);
        check(S::Running, E::AgentReturned, None);
    }

    #[test]
    fn terminal_states_are_final() {
        let all = [
            S::Staging,
            S::Starting,
            S::Running,
            S::Killing,
            S::Finished,
            S::Failed,
            S::Killed,
            S::Error,
            S::Lost,
            S::Unreachable,
            S::Gone,
        ];
        let events = [
            E::KillRequested,
            E::AgentUnreachable,
            E::AgentReturned,
            E::AgentLost,
            E::AgentGone,
            E::Reported(S::Running),
        ];
        for s in all.into_iter().filter(|s| s.is_terminal()) {
            for e in events {
                assert!(transition(s, e).is_err(), "{s:?} + {e:?}");
            }
        }
    }
}
