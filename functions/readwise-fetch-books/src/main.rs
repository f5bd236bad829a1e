//! The `readwise-fetch-books` Lambda function.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cairn_aws::run(vec![readwise_fetch_books::function()]).await
}
