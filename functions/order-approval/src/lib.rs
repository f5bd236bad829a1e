//! `order-approval`: a workflow that waits for a person. On `app/order.placed` it reserves the
//! stock, then waits up to a day for `app/order.approved` with the same `data.order_id`; an
//! approved order is charged by invoking `order-charge` (`step.invoke`) and ships, the others
//! are released. A declined charge fails the run, and its `on_failure` handler releases the
//! stock. Both functions run in this one binary ([`functions`]).

use cairn::prelude::*;
use serde_json::Value;

/// The event that starts a run.
pub const PLACED: &str = "app/order.placed";
/// The event a run waits for.
pub const APPROVED: &str = "app/order.approved";
/// The id of the function that charges an order (invoked by `order-approval`).
pub const CHARGE: &str = "order-charge";
/// The event that starts a charge directly (it is usually invoked).
pub const CHARGE_REQUESTED: &str = "app/order.charge";

/// Every function of this binary.
pub fn functions() -> Vec<Function> {
    vec![function(), charge()]
}

/// `order-charge`: charges `data.amount` for `data.order_id`; a non-positive amount is
/// declined (a non-retriable failure, which the invoking run receives).
///
/// # Panics
/// Never: the definition is static and valid (its own test builds it).
pub fn charge() -> Function {
    Function::new(CHARGE)
        .name("Order charge")
        .on_event(CHARGE_REQUESTED)
        .handler(|event: Event, step: Step| async move {
            let order_id = event.data["order_id"].clone();
            let amount = event.data["amount"].as_f64().unwrap_or(0.0);
            step.run("charge-card", || async move {
                if amount > 0.0 {
                    Ok(json!({ "order_id": order_id, "charged": amount }))
                } else {
                    Err(StepError::non_retriable(format!("payment declined: amount {amount} is not positive")))
                }
            })
            .await
        })
        .expect("the order-charge definition is valid")
}

/// The function, ready to register with a driver.
///
/// # Panics
/// Never: the definition is static and valid (its own test builds it).
pub fn function() -> Function {
    Function::new("order-approval")
        .name("Order approval")
        .on_event(PLACED)
        .awaits(APPROVED)
        .invokes(CHARGE)
        .on_failure(|failure: Event<FailureData>, step: Step| async move {
            let order_id = failure.data.event.data["order_id"].clone();
            let reason = failure.data.error.message.clone();
            step.run("release-stock", || async move { Ok(json!({ "released": order_id, "reason": reason })) }).await
        })
        .handler(|event: Event, step: Step| async move {
            let order_id = event.data["order_id"].clone();
            let reserved: Value = step
                .run("reserve-stock", || {
                    let order_id = order_id.clone();
                    async move { Ok(json!({ "order_id": order_id, "reserved": true })) }
                })
                .await?;
            let approval = step
                .wait_for_event("wait-for-approval", WaitFor::event(APPROVED).matching("data.order_id").timeout("1d"))
                .await?;
            match approval {
                Some(approved) => {
                    let by = approved.data["by"].clone();
                    let charge = Invoke::function(CHARGE)
                        .data(json!({ "order_id": order_id, "amount": event.data["amount"] }))
                        .timeout("1h");
                    let charged: Value = step.invoke("charge", charge).await?;
                    step.run("ship", || {
                        let order_id = order_id.clone();
                        let charged = charged["charged"].clone();
                        async move {
                            Ok(json!({ "order_id": order_id, "shipped": true, "approved_by": by, "charged": charged }))
                        }
                    })
                    .await
                }
                None => {
                    step.run("release-stock", || async move {
                        Ok(json!({ "released": reserved["order_id"], "shipped": false }))
                    })
                    .await
                }
            }
        })
        .expect("the order-approval definition is valid")
}

/// The `order-approval` Lambda binary: both functions.
pub fn lambda() -> cairn_aws::Lambda {
    cairn_aws::Lambda::new("order-approval", functions())
        .description("order-approval: on app/order.placed, reserve stock, then wait up to a day for app/order.approved")
}
