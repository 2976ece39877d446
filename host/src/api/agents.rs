//! Agents of the signed-in user: instructions, the provider and model, tools and skills.
//! Another user's agent answers 404, exactly like one that does not exist.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ApiQuery, ErrorEnvelope, Page, PageQuery};
use crate::auth::CurrentUser;
use crate::store::agents::{AgentChanges, AgentRow, AgentWrite, NewAgent, ProviderChoice};

/// Longest `instructions`, in bytes: ample for a system prompt, small enough that every
/// provider call can afford to carry it.
const MAX_INSTRUCTIONS: usize = 100 * 1024;
const DEFAULT_MAX_STEPS: i64 = 10;
/// Most tools or skills one agent may list; each adds to every prompt.
const MAX_LIST: usize = 256;

/// Largest `max_tokens` an agent may ask for: beyond any model's output today, and a bound the
/// document can state.
const MAX_TOKENS: u32 = 1_000_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, delete))
}

/// An agent as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub instructions: String,
    pub provider: ProviderChoice,
    /// `instance/tool` names.
    pub tools: Vec<String>,
    pub skills: Vec<String>,
    pub max_steps: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// What may surprise you about this agent, e.g. a model without a price (its calls are
    /// recorded as free, and no budget limits them).
    pub warnings: Vec<String>,
}

impl Agent {
    fn of(state: &AppState, row: AgentRow) -> Agent {
        let warnings = state
            .agent
            .model_warnings(&row.provider.plugin, &row.provider.model);
        Agent {
            warnings,
            ..Agent::from(row)
        }
    }
}

impl From<AgentRow> for Agent {
    fn from(row: AgentRow) -> Self {
        Agent {
            id: row.id,
            name: row.name,
            instructions: row.instructions,
            provider: row.provider,
            tools: row.tools,
            skills: row.skills,
            max_steps: row.max_steps,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
            warnings: Vec::new(),
        }
    }
}

/// Body of agent creation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgentBody {
    /// 1–64 characters, unique among your agents, without control characters or leading
    /// or trailing spaces.
    #[schema(
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        min_length = 1,
        max_length = 64
    )]
    pub name: String,
    /// System prompt, at most 102400 characters.
    #[serde(default)]
    #[schema(max_length = 102400)]
    pub instructions: String,
    pub provider: ProviderChoice,
    /// `instance/tool` names of enabled tools, each once.
    #[serde(default)]
    #[schema(max_items = 256)]
    pub tools: Vec<String>,
    /// Installed plugins with a `SKILL.md` (`namespace/name`), each once.
    #[serde(default)]
    #[schema(max_items = 256)]
    pub skills: Vec<String>,
    /// 1–100 (default 10): most provider calls in one run.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_steps: Option<i64>,
}

/// Body of an agent update: only the fields given change. `provider` is replaced whole.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentUpdate {
    #[schema(
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        min_length = 1,
        max_length = 64
    )]
    pub name: Option<String>,
    #[schema(max_length = 102400)]
    pub instructions: Option<String>,
    pub provider: Option<ProviderChoice>,
    #[schema(max_items = 256)]
    pub tools: Option<Vec<String>>,
    #[schema(max_items = 256)]
    pub skills: Option<Vec<String>>,
    #[schema(minimum = 1, maximum = 100)]
    pub max_steps: Option<i64>,
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    let len = name.chars().count();
    if !(1..=64).contains(&len) || name.trim() != name || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must be 1-64 characters, without leading or trailing spaces",
        ));
    }
    Ok(())
}

fn validate_instructions(instructions: &str) -> Result<(), ApiError> {
    if instructions.chars().count() > MAX_INSTRUCTIONS {
        return Err(ApiError::bad_request(format!(
            "instructions must be at most {MAX_INSTRUCTIONS} characters"
        )));
    }
    Ok(())
}

fn validate_provider(provider: &ProviderChoice) -> Result<(), ApiError> {
    if !(1..=128).contains(&provider.plugin.chars().count()) {
        return Err(ApiError::bad_request(
            "provider.plugin must be a plugin instance id",
        ));
    }
    if !(1..=200).contains(&provider.model.chars().count()) {
        return Err(ApiError::bad_request(
            "provider.model must be 1-200 characters",
        ));
    }
    if provider
        .max_tokens
        .is_some_and(|n| !(1..=MAX_TOKENS).contains(&n))
    {
        return Err(ApiError::bad_request(format!(
            "provider.max_tokens must be 1-{MAX_TOKENS}"
        )));
    }
    if let Some(t) = provider.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::bad_request(
            "provider.temperature must be between 0 and 2",
        ));
    }
    Ok(())
}

/// Each tool must be one an enabled plugin instance offers now; the agent loop re-checks at
/// run time, since instances can be disabled later.
async fn validate_tools(state: &AppState, tools: &[String]) -> Result<(), ApiError> {
    if tools.len() > MAX_LIST {
        return Err(ApiError::bad_request(format!(
            "tools: at most {MAX_LIST} entries"
        )));
    }
    state.runtime.catch_up().await?;
    let available: std::collections::HashSet<String> = state
        .runtime
        .tools()
        .into_iter()
        .map(|(instance, spec)| format!("{instance}/{}", spec.name))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for tool in tools {
        if !available.contains(tool) {
            return Err(ApiError::bad_request(format!(
                "tools: unknown tool `{tool}` (expected `instance/tool` of an enabled plugin)"
            )));
        }
        if !seen.insert(tool) {
            return Err(ApiError::bad_request(format!(
                "tools: `{tool}` is listed twice"
            )));
        }
    }
    Ok(())
}

/// Each skill must be an installed plugin that carries a `SKILL.md`, named once: every run
/// lists each of them in its prompt, so a name that is not a skill would only cost work. No
/// two may carry a skill of the same name: the model loads a skill by that name, and one of
/// them would silently shadow the other.
async fn validate_skills(state: &AppState, skills: &[String]) -> Result<(), ApiError> {
    if skills.len() > MAX_LIST {
        return Err(ApiError::bad_request(format!(
            "skills: at most {MAX_LIST} entries"
        )));
    }
    if let Some(bad) = skills
        .iter()
        .find(|s| !(1..=128).contains(&s.chars().count()))
    {
        return Err(ApiError::bad_request(format!(
            "skills: `{bad}` must be 1-128 characters"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = skills.iter().find(|s| !seen.insert(s.as_str())) {
        return Err(ApiError::bad_request(format!(
            "skills: `{twice}` is listed twice"
        )));
    }
    let mut carried: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for plugin in skills {
        let Some(skill) = state.runtime.skill(plugin).await? else {
            return Err(ApiError::bad_request(format!(
                "skills: unknown skill `{plugin}` (expected the name of an installed plugin with a SKILL.md, e.g. `acme/haiku`)"
            )));
        };
        if let Some(first) = carried.insert(skill.name.clone(), plugin) {
            return Err(ApiError::bad_request(format!(
                "skills: `{first}` and `{plugin}` both carry a skill named `{}`; the model asks \
                 for a skill by that name, so an agent's skills must have different names",
                skill.name
            )));
        }
    }
    Ok(())
}

fn validate_max_steps(max_steps: i64) -> Result<(), ApiError> {
    if !(1..=100).contains(&max_steps) {
        return Err(ApiError::bad_request("max_steps must be 1-100"));
    }
    Ok(())
}

fn written(state: &AppState, outcome: AgentWrite, name: Option<&str>) -> Result<Agent, ApiError> {
    match outcome {
        AgentWrite::Done(row) => Ok(Agent::of(state, *row)),
        AgentWrite::NameTaken => Err(ApiError::conflict(format!(
            "you already have an agent named `{}`",
            name.unwrap_or_default()
        ))),
        AgentWrite::NotFound => Err(ApiError::not_found("agent")),
    }
}

/// The signed-in user's agents, by name.
#[utoipa::path(get, path = "/api/agents", tag = "agents", params(PageQuery),
    responses((status = 200, body = Page<Agent>), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<Agent>>, ApiError> {
    let (items, total) = state
        .db()
        .list_agents(user.id(), page.limit(), page.offset())
        .await?;
    Ok(axum::Json(page.page(
        items.into_iter().map(|a| Agent::of(&state, a)).collect(),
        total,
    )))
}

/// Creates an agent.
#[utoipa::path(post, path = "/api/agents", tag = "agents", request_body = NewAgentBody,
    responses((status = 201, body = Agent), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 409, description = "name taken", body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<NewAgentBody>,
) -> Result<(StatusCode, axum::Json<Agent>), ApiError> {
    let max_steps = body.max_steps.unwrap_or(DEFAULT_MAX_STEPS);
    validate_name(&body.name)?;
    validate_instructions(&body.instructions)?;
    validate_provider(&body.provider)?;
    validate_tools(&state, &body.tools).await?;
    validate_skills(&state, &body.skills).await?;
    validate_max_steps(max_steps)?;
    let outcome = state
        .db()
        .create_agent(
            user.id(),
            NewAgent {
                name: &body.name,
                instructions: &body.instructions,
                provider: &body.provider,
                tools: &body.tools,
                skills: &body.skills,
                max_steps,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(written(&state, outcome, Some(&body.name))?),
    ))
}

/// One of the signed-in user's agents.
#[utoipa::path(get, path = "/api/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = Agent), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<axum::Json<Agent>, ApiError> {
    let row = state
        .db()
        .get_agent(user.id(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    Ok(axum::Json(Agent::of(&state, row)))
}

/// Changes the given fields of an agent.
#[utoipa::path(patch, path = "/api/agents/{id}", tag = "agents", params(("id" = String, Path)), request_body = AgentUpdate,
    responses((status = 200, body = Agent), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, description = "name taken", body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn update(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AgentUpdate>,
) -> Result<axum::Json<Agent>, ApiError> {
    if let Some(name) = &body.name {
        validate_name(name)?;
    }
    if let Some(instructions) = &body.instructions {
        validate_instructions(instructions)?;
    }
    if let Some(provider) = &body.provider {
        validate_provider(provider)?;
    }
    if let Some(tools) = &body.tools {
        validate_tools(&state, tools).await?;
    }
    if let Some(skills) = &body.skills {
        validate_skills(&state, skills).await?;
    }
    if let Some(max_steps) = body.max_steps {
        validate_max_steps(max_steps)?;
    }
    let outcome = state
        .db()
        .update_agent(
            user.id(),
            &id,
            AgentChanges {
                name: body.name.as_deref(),
                instructions: body.instructions.as_deref(),
                provider: body.provider.as_ref(),
                tools: body.tools.as_deref(),
                skills: body.skills.as_deref(),
                max_steps: body.max_steps,
            },
        )
        .await?;
    Ok(axum::Json(written(&state, outcome, body.name.as_deref())?))
}

/// Deletes an agent. Its sessions stay, without an agent, until given another.
#[utoipa::path(delete, path = "/api/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.db().delete_agent(user.id(), &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("agent"))
    }
}
