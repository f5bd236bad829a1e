//! The `readwise-daily-sync` Lambda function.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cairn_aws::run(readwise_daily_sync::lambda().into_functions()).await
}
