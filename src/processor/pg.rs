//! The PostgreSQL wire protocol: psql, Grafana's PostgreSQL data source and any
//! PostgreSQL driver run pull queries (and create or drop continuous queries) here.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::{QueryHook, ServerOptions};

use super::control;
use super::node::{Executed, Node};

/// Handles `CREATE/DROP MATERIALIZED VIEW` (continuous queries).
struct ControlHook {
    node: Arc<Node>,
}

fn user_error(code: &str, msg: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), msg)))
}

#[async_trait]
impl QueryHook for ControlHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let sql = statement.to_string();
        match control::parse(&sql) {
            Ok(None) => None,
            Err(e) => Some(Err(user_error("42601", e))),
            Ok(Some(_)) => Some(match self.node.execute(&sql).await {
                Ok(Executed::Done(tag)) => Ok(Response::Execution(Tag::new(tag))),
                Ok(Executed::Rows(_)) => Ok(Response::EmptyQuery),
                Err(e) => Err(user_error("42P17", format!("{e:#}"))),
            }),
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match control::parse(&statement.to_string()) {
            Ok(None) => None,
            _ => Some(Err(user_error(
                "0A000",
                "CREATE/DROP MATERIALIZED VIEW takes the simple query protocol (psql does; drivers: simple_query / batch_execute)".into(),
            ))),
        }
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

/// Serves the PostgreSQL protocol on `host:port` until the task is aborted.
pub async fn serve(node: Arc<Node>, host: String, port: u16) -> std::io::Result<()> {
    let ctx = Arc::new(node.pull_context());
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ControlHook { node }),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let opts = ServerOptions::new().with_host(host).with_port(port);
    datafusion_postgres::serve_with_hooks(ctx, &opts, hooks).await
}
