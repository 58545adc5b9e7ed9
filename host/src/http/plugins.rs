//! `GET /api/plugins`: the reset plugins, loaded or not (operators only),
//! with their bodies.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{AuthCaller, operator_only};
use super::json::Success;
use super::reset::HookName;
use super::responses::{NoToken, OperatorsOnly};
use super::{ApiError, AppState};
use crate::plugins::PluginHooks;
use crate::plugins::view::{PluginStatus, PluginsView};

/// `GET /api/plugins`: operators only. A tenant gets 403: the list names
/// other tenants and their plugins, and unlike a session there is nothing
/// whose existence the 404 would hide.
#[utoipa::path(
    get, path = "/api/plugins", tag = "plugins",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The plugins, loaded or not", body = Success<PluginsBody>),
        NoToken, OperatorsOnly,
    )
)]
pub async fn list_plugins(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
) -> Result<Success<PluginsBody>, ApiError> {
    operator_only(&caller, "list plugins")?;
    // No plugin runtime behind the hooks (no `[plugins]` section): nothing is loaded.
    let hooks: &dyn std::any::Any = &**state.gateway.hooks();
    let view = hooks
        .downcast_ref::<PluginHooks>()
        .map(PluginHooks::view)
        .unwrap_or_default();
    Ok(Success::new(PluginsBody::from(&view)))
}

/// `GET /api/plugins` (operators only).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginsBody {
    /// The config file with the `[plugins]` section; `null` when plugins are off.
    pub config_file: Option<String>,
    /// Why the last reload of the config failed (the previous config keeps serving).
    pub config_error: Option<String>,
    pub plugins: Vec<PluginBody>,
}

impl From<&PluginsView> for PluginsBody {
    fn from(view: &PluginsView) -> PluginsBody {
        PluginsBody {
            config_file: view.config_file.as_ref().map(|f| f.display().to_string()),
            config_error: view.config_error.clone(),
            plugins: view.plugins.iter().map(PluginBody::from).collect(),
        }
    }
}

/// One plugin, as `GET /api/plugins` shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginBody {
    /// The operator's name, or `{companyId}/{name}` for a tenant's plugin.
    #[schema(example = "tenant-policy")]
    pub name: String,
    /// The tenant that shipped it; `null` for an operator plugin.
    pub owner: Option<String>,
    #[schema(example = "plugins/dist/tenant-policy.wasm")]
    pub file: String,
    /// Whether some version of it is loaded and can run.
    pub loaded: bool,
    /// `compiling` (no version loaded yet), `loaded` or `failed` (it never loaded).
    #[schema(value_type = String, example = "loaded")]
    pub state: &'static str,
    /// `source` (compiled by this process) or `cache` (`data/plugins/cache/`).
    #[schema(value_type = Option<String>, example = "cache")]
    pub compiled_from: Option<&'static str>,
    pub compile_ms: Option<u64>,
    /// SHA-256 of the loaded component: its version.
    pub sha256: Option<String>,
    pub size_bytes: Option<u64>,
    pub loaded_at_ms: Option<u64>,
    pub enabled: bool,
    /// `before_clear` and/or `after_clear`.
    #[schema(value_type = Vec<HookName>)]
    pub hooks: Vec<&'static str>,
    /// Tenant ids it runs for; `["*"]` for all.
    pub tenants: Vec<String>,
    /// `open` or `closed`: what a failing `before_clear` does to the reset.
    #[schema(value_type = String, example = "closed")]
    pub fail_mode: &'static str,
    pub time_budget_ms: u64,
    pub memory_mib: u64,
    pub capabilities: Vec<String>,
    /// Why the last load failed (a previous version, if any, keeps serving).
    pub last_error: Option<String>,
    pub calls: CallCountsBody,
}

impl From<&PluginStatus> for PluginBody {
    fn from(p: &PluginStatus) -> PluginBody {
        PluginBody {
            name: p.name.clone(),
            owner: p.owner.as_ref().map(|t| t.as_str().to_owned()),
            file: p.file.display().to_string(),
            loaded: p.loaded,
            state: p.state,
            compiled_from: p.compiled_from,
            compile_ms: p.compile_ms,
            sha256: p.sha256.clone(),
            size_bytes: p.size_bytes,
            loaded_at_ms: p.loaded_at_ms,
            enabled: p.enabled,
            hooks: p.hooks.clone(),
            tenants: p.tenants.clone(),
            fail_mode: p.fail_mode,
            time_budget_ms: p.time_budget_ms,
            memory_mib: p.memory_mib,
            capabilities: p.capabilities.clone(),
            last_error: p.last_error.clone(),
            calls: CallCountsBody {
                ok: p.calls.ok,
                vetoed: p.calls.vetoed,
                failed: p.calls.failed,
                timed_out: p.calls.timed_out,
                events_dropped: p.calls.events_dropped,
            },
        }
    }
}

/// A plugin's call counts since it was loaded.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallCountsBody {
    pub ok: u64,
    pub vetoed: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// Events an event hook (`on-event`) lost because its queue was full.
    pub events_dropped: u64,
}
