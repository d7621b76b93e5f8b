//! Who a turn runs for: the execution context an agent platform hands to every runtime.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Who is asking, and in which setting: the agent, organisation, user, session and
/// environment a turn runs for (the context Kubiya's runtimes receive).
///
/// Every runtime receives it unchanged; runtimes use it for attribution, per-user state or
/// audit, and hosts for routing. All fields are optional.
///
/// # Examples
///
/// ```
/// use runtime_api::{ExecutionContext, TurnRequest};
///
/// let request = TurnRequest::new("hello").with_context(
///     ExecutionContext::default()
///         .with_agent_id("support-bot")
///         .with_user_id("u-42")
///         .with_environment("region", "eu"),
/// );
/// assert_eq!(request.context.user_id.as_deref(), Some("u-42"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExecutionContext {
    /// The agent the turn belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The organisation (tenant) that owns the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// The user on whose behalf the turn runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The conversation or session the turn is part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Named values of the environment the agent runs in (deployment, region, …). Not the
    /// process environment: nothing here is a secret's value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
}

impl ExecutionContext {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Sets the agent id.
    pub fn with_agent_id(mut self, id: impl Into<String>) -> Self {
        self.agent_id = Some(id.into());
        self
    }

    /// Sets the organisation id.
    pub fn with_organization_id(mut self, id: impl Into<String>) -> Self {
        self.organization_id = Some(id.into());
        self
    }

    /// Sets the user id.
    pub fn with_user_id(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// Sets the session id.
    pub fn with_session_id(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    /// Adds one environment value.
    pub fn with_environment(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.environment.insert(key.into(), value.into());
        self
    }
}
