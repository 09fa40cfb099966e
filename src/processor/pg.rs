//! The PostgreSQL wire protocol: psql, Grafana's PostgreSQL data source and any
//! PostgreSQL driver run pull queries (and create or drop continuous queries) here.
//!
//! # What clients see of the catalog
//!
//! Clients learn about tables from PostgreSQL's own catalog: psql's `\dt` and `\d`,
//! drivers' metadata calls and the schema browsers of BI tools read `pg_catalog.pg_class`,
//! `pg_attribute`, `pg_namespace`, `pg_type` and call functions such as
//! `current_database()` or `format_type()`. The wire server's session ([`pg_context`]) gets
//! them from the PostgreSQL-wire crate's companion `datafusion-pg-catalog` (through its
//! re-export, so that it is always the version built for that crate's DataFusion). Its
//! tables are computed when they are read, so a table added at run time (`CREATE
//! MATERIALIZED VIEW`) is listed at once and a dropped one disappears.
//!
//! The session shares the processor's schemas (the same [`SchemaProvider`]s, so every
//! live, latest and reference table is there) but not its catalog objects: `pg_catalog`
//! and the PostgreSQL functions exist on the wire only, and `POST /sql` keeps plain
//! DataFusion SQL. Every relation the processor serves is reported as an ordinary table
//! (`relkind = 'r'`, `BASE TABLE` in `information_schema`), although live tables are views
//! to DataFusion: they are what a user queries, and psql's `\dt` lists only tables.
//!
//! The database is the DataFusion catalog (`current_database()` is `datafusion`); the
//! database name a client connects with is not checked, nor is the user.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    SchemaProvider, TableProvider,
};
use datafusion::common::ParamValues;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::auth::AuthManager;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
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

/// A schema of the processor as the wire shows it: the same tables (shared, so tables
/// added or dropped at run time show at once), each reported as an ordinary table.
#[derive(Debug)]
struct AsTables(Arc<dyn SchemaProvider>);

#[async_trait]
impl SchemaProvider for AsTables {
    fn owner_name(&self) -> Option<&str> {
        self.0.owner_name()
    }

    fn table_names(&self) -> Vec<String> {
        self.0.table_names()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        self.0.table(name).await
    }

    async fn table_type(&self, name: &str) -> datafusion::error::Result<Option<TableType>> {
        Ok(self.0.table_exist(name).then_some(TableType::Base))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        self.0.register_table(name, table)
    }

    fn deregister_table(
        &self,
        name: &str,
    ) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        self.0.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.table_exist(name)
    }
}

/// The session the wire serves: the processor's pull context (its functions, settings
/// and tables) with catalogs of its own that hold the processor's schemas, seen through
/// [`AsTables`], and `pg_catalog`. The schemas are those that exist now (the processor
/// creates none later); the tables in them are shared.
pub fn pg_context(pull: &SessionContext) -> Result<SessionContext, DataFusionError> {
    let state = pull.state();
    let catalogs = MemoryCatalogProviderList::new();
    let shared = state.catalog_list();
    // Ordered, so that the object ids `pg_catalog` hands out follow the names.
    let names: BTreeMap<String, _> = shared
        .catalog_names()
        .into_iter()
        .filter_map(|c| shared.catalog(&c).map(|cat| (c, cat)))
        .collect();
    for (name, catalog) in names {
        let own = MemoryCatalogProvider::new();
        for schema in catalog.schema_names() {
            if let Some(s) = catalog.schema(&schema) {
                own.register_schema(&schema, Arc::new(AsTables(s)))?;
            }
        }
        catalogs.register_catalog(name, Arc::new(own));
    }
    let default_catalog = state.config().options().catalog.default_catalog.clone();
    let ctx = SessionContext::new_with_state(
        SessionStateBuilder::new_from_existing(state)
            .with_catalog_list(Arc::new(catalogs))
            .build(),
    );
    setup_pg_catalog(&ctx, &default_catalog, AuthManager::default()).map_err(|e| *e)?;
    Ok(ctx)
}

/// Serves the PostgreSQL protocol on `host:port` until the task is aborted.
pub async fn serve(node: Arc<Node>, host: String, port: u16) -> std::io::Result<()> {
    let ctx = Arc::new(pg_context(&node.pull_context()).map_err(std::io::Error::other)?);
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ControlHook { node }),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let opts = ServerOptions::new().with_host(host).with_port(port);
    datafusion_postgres::serve_with_hooks(ctx, &opts, hooks).await
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::prelude::SessionConfig;

    use super::*;

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<Vec<String>> {
        let batches = ctx
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut out = Vec::new();
        for b in batches {
            for r in 0..b.num_rows() {
                out.push(
                    b.columns()
                        .iter()
                        .map(|c| array_value_to_string(c, r).expect("printable"))
                        .collect(),
                );
            }
        }
        out
    }

    const PUBLIC_RELATIONS: &str = "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c \
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
        WHERE n.nspname = 'public' ORDER BY c.relname";

    #[tokio::test]
    async fn the_wire_catalog_lists_every_table_as_a_table_including_later_ones() {
        let pull =
            SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
        // A view to DataFusion, as live tables are.
        pull.sql("CREATE VIEW live AS SELECT 1 AS a").await.unwrap();
        let pg = pg_context(&pull).unwrap();
        pull.sql("CREATE VIEW later AS SELECT 'x' AS b")
            .await
            .unwrap();
        assert_eq!(
            rows(&pg, PUBLIC_RELATIONS).await,
            [["later", "r"], ["live", "r"]]
        );
        assert_eq!(
            rows(
                &pg,
                "SELECT table_name, table_type FROM information_schema.tables \
                 WHERE table_schema = 'public' ORDER BY table_name"
            )
            .await,
            [["later", "BASE TABLE"], ["live", "BASE TABLE"]]
        );
        assert_eq!(
            rows(&pg, "SELECT current_database()").await,
            [["datafusion"]]
        );
        pull.deregister_table("live").unwrap();
        assert_eq!(rows(&pg, PUBLIC_RELATIONS).await, [["later", "r"]]);
        // The pull context itself (`POST /sql`) is left as it was.
        assert!(pull.sql("SELECT * FROM pg_catalog.pg_class").await.is_err());
        assert!(pull.sql("SELECT current_database()").await.is_err());
        let kinds = pull
            .sql("SELECT table_type FROM information_schema.tables WHERE table_name = 'later'")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(kinds[0].column(0).as_string::<i32>().value(0), "VIEW");
        assert_eq!(kinds[0].column(0).len(), 1);
    }
}
