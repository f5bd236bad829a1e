//! The `order-approval` Lambda function.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cairn_aws::run(order_approval::lambda().into_functions()).await
}
