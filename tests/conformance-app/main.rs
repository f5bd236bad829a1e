//! `conformance-app`: app `conformance` on 127.0.0.1:$PORT at /api/inngest, serving the
//! functions the differential tests compare with their TypeScript twins
//! (tests/conformance-ts/app.mjs). Honours INNGEST_DEV and INNGEST_SIGNING_KEY(_FALLBACK).

use cairn::flow::ConcurrencyScope;
use cairn::prelude::*;
use serde_json::Value;

fn functions() -> Result<Vec<Function>, cairn::DefinitionError> {
    Ok(vec![
        Function::new("hello").on_event("app/my.event").handler(|_: Event, step: Step| async move {
            let result: Value = step.run("step-name", || async { Ok(json!({"success": true})) }).await?;
            step.sleep("wait", "1h").await?;
            Ok(result)
        })?,
        Function::new("repeated-step").on_event("test/repeat").handler(|event: Event, step: Step| async move {
            let mut total = 0;
            for page in 1..=3 {
                let fetched: Value =
                    step.run("fetch-page", || async move { Ok(json!({"page": page, "count": 10})) }).await?;
                total += fetched["count"].as_i64().unwrap_or(0);
            }
            let saved: i64 = step.run("save-count", || async move { Ok(total) }).await?;
            Ok(json!({"userId": event.data["userId"], "total": saved}))
        })?,
        Function::new("daily-fan-out").cron("0 3 * * *").sends("readwise/fetch-books").handler(
            |_: Event, step: Step| async move {
                let users: Vec<String> =
                    step.run("list-users", || async { Ok(vec!["u1".to_string(), "u2".to_string()]) }).await?;
                let events: Vec<EventPayload> =
                    users.iter().map(|u| EventPayload::new("readwise/fetch-books", json!({"userId": u}))).collect();
                step.send_event("fan-out", events).await?;
                Ok(json!({"sent": users.len()}))
            },
        )?,
        Function::new("parallel").on_event("test/parallel").handler(|_: Event, step: Step| async move {
            let (a, b) =
                join!(step.run("a", || async { Ok("A".to_string()) }), step.run("b", || async { Ok("B".to_string()) }));
            Ok(vec![a?, b?])
        })?,
        Function::new("flaky").on_event("test/flaky").retries(2).handler(|_: Event, step: Step| async move {
            let attempt = step.clone();
            step.run("may-fail", || async move {
                if attempt.attempt() == 0 { Err(StepError::new("boom")) } else { Ok("ok".to_string()) }
            })
            .await
        })?,
        Function::new("fatal").on_event("test/fatal").handler(|_: Event, step: Step| async move {
            step.run("fatal-step", || async { Err::<(), _>(StepError::non_retriable("nope")) }).await
        })?,
        Function::new("waiter").on_event("test/wait").awaits("test/approved").handler(
            |_: Event, step: Step| async move {
                let wait = WaitFor::event("test/approved").timeout("1d").if_expr("async.data.id == event.data.id");
                Ok(step.wait_for_event("wait-approval", wait).await?.map(|event| event.data))
            },
        )?,
        Function::new("double").on_event("test/double").handler(|event: Event, step: Step| async move {
            let n = event.data["n"].as_i64().unwrap_or(0);
            step.run("double", || async move { Ok(n * 2) }).await
        })?,
        // Invokes `double`; with `slow`, `hello` (which sleeps an hour) under a 2 s timeout; with
        // `missing`, a function no app serves; with `failing`, `fatal`; with `both`, `double` twice
        // at once.
        Function::new("invoker")
            .on_event("test/invoke")
            .invokes("double")
            .invokes("hello")
            .invokes("missing")
            .invokes("fatal")
            .handler(|event: Event, step: Step| async move {
                if event.data["slow"] == true {
                    let hello = Invoke::function("hello").data(json!({"userId": "x"})).timeout("2s");
                    return step.invoke::<Value>("call-hello", hello).await;
                }
                if event.data["missing"] == true {
                    return step.invoke::<Value>("call-missing", Invoke::function("missing")).await;
                }
                if event.data["failing"] == true {
                    return step.invoke::<Value>("call-fatal", Invoke::function("fatal")).await;
                }
                if event.data["both"] == true {
                    let (one, two) = join!(
                        step.invoke::<Value>("double-one", Invoke::function("double").data(json!({"n": 1}))),
                        step.invoke::<Value>("double-two", Invoke::function("double").data(json!({"n": 2})))
                    );
                    return Ok(json!([one?, two?]));
                }
                step.invoke::<Value>("call-double", Invoke::function("double").data(json!({"n": 21}))).await
            })?,
        // Flow control: the sync must register these options exactly as the SDK does.
        Function::new("flow-sync")
            .on_event("test/sync")
            .concurrency(Concurrency::new(1).key("event.data.userId"))
            .concurrency(Concurrency::new(20).key("\"readwise-api\"").scope(ConcurrencyScope::Account))
            .throttle(Throttle::new(2, "10s").burst(1).key("event.data.userId"))
            .priority("event.data.plan == 'pro' ? 120 : 0")
            .singleton(Singleton::skip().key("event.data.userId"))
            .cancel_on(CancelOn::event("test/user.deleted").matching("data.userId").timeout("1h"))
            .cancel_on(CancelOn::event("test/sync.cancelled").when("async.data.id == event.data.id"))
            .timeouts(Timeouts::new().start("10m").finish("1h"))
            .handler(|_: Event, _: Step| async move { Ok("synced") })?,
        Function::new("flow-charge")
            .on_event("test/charge")
            .idempotency("event.data.cartId")
            .handler(|_: Event, _: Step| async move { Ok("charged") })?,
        Function::new("flow-limited")
            .on_event("test/limited")
            .rate_limit(RateLimit::new(10, "1m").key("event.data.userId"))
            .concurrency(Concurrency::new(5))
            .singleton(Singleton::cancel())
            .handler(|_: Event, _: Step| async move { Ok("limited") })?,
    ])
}

/// Only for the serve benchmark (`CAIRN_BENCH_FUNCTION=1`): 100 `run` steps and one more.
fn bench_function() -> Result<Function, cairn::DefinitionError> {
    Function::new("bench-hundred").on_event("bench/hundred").handler(|_: Event, step: Step| async move {
        let mut total = 0;
        for n in 0..101 {
            total += step.run("step", || async move { Ok(n) }).await?;
        }
        Ok(total)
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut functions = functions()?;
    if std::env::var("CAIRN_BENCH_FUNCTION").is_ok() {
        functions.push(bench_function()?);
    }
    let registry = cairn::Registry::new(functions)?;
    let config = cairn_http::ServeConfig::from_env("conformance")?;
    let app = axum::Router::new().nest("/api/inngest", cairn_http::serve(config, registry));
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
