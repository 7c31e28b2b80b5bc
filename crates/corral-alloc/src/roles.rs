//! Roles: `*` (unreserved, the default) or a hierarchical name like `eng/web`, with a weight
//! and an optional quota (a limit on what the role may hold at once).

use std::fmt;

use crate::resources::Resources;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Role(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid role {input:?}: {reason}")]
pub struct RoleError {
    pub input: String,
    pub reason: &'static str,
}

impl Role {
    /// `*`: unreserved resources, and the role of frameworks that name none.
    pub fn any() -> Role {
        Role("*".into())
    }

    /// Parses and validates a role name, as Mesos does: `*`, or `/`-separated components that
    /// are not empty, `.` or `..`, do not start with `-`, and contain no whitespace, `*` or
    /// parentheses.
    pub fn parse(s: &str) -> Result<Role, RoleError> {
        let err = |reason| RoleError { input: s.to_string(), reason };
        if s == "*" {
            return Ok(Role::any());
        }
        if s.is_empty() {
            return Err(err("a role name may not be empty"));
        }
        if s.len() > 256 {
            return Err(err("a role name may have at most 256 characters"));
        }
        if s.chars().any(|c| c.is_whitespace() || c == '(' || c == ')' || c.is_control()) {
            return Err(err("role names may not contain whitespace, '(' or ')'"));
        }
        for part in s.split('/') {
            if part.is_empty() {
                return Err(err("role components may not be empty (no leading, trailing or double '/')"));
            }
            if part == "." || part == ".." {
                return Err(err("role components may not be '.' or '..'"));
            }
            if part.starts_with('-') {
                return Err(err("role components may not start with '-'"));
            }
            if part.contains('*') {
                return Err(err("'*' may only stand alone"));
            }
        }
        Ok(Role(s.to_string()))
    }

    pub fn is_any(&self) -> bool {
        self.0 == "*"
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an operator set for a role.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleConfig {
    /// A role with weight 2 gets twice the dominant share of a role with weight 1.
    pub weight: f64,
    /// The most (unreserved view) the role may hold at once, allocated and offered together.
    pub quota: Option<Resources>,
}

impl Default for RoleConfig {
    fn default() -> Self {
        RoleConfig { weight: 1.0, quota: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["*", "ads", "eng/web", "a.b", "team_1/x-y"] {
            assert!(Role::parse(ok).is_ok(), "{ok}");
        }
        for (bad, reason) in [
            ("", "a role name may not be empty"),
            ("a b", "role names may not contain whitespace, '(' or ')'"),
            ("/eng", "role components may not be empty (no leading, trailing or double '/')"),
            ("eng//web", "role components may not be empty (no leading, trailing or double '/')"),
            ("eng/..", "role components may not be '.' or '..'"),
            ("-eng", "role components may not start with '-'"),
            ("eng/*", "'*' may only stand alone"),
        ] {
            assert_eq!(Role::parse(bad).unwrap_err().reason, reason, "{bad}");
        }
    }
}
