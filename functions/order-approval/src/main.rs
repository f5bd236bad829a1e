//! The `order-approval` Lambda function.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cairn_aws::run(vec![order_approval::function()]).await
}
