output "function_url" {
  description = "Streaming endpoint; append /v1 for the OpenAI SDK base_url."
  value       = aws_lambda_function_url.this.function_url
}

output "function_name" {
  value = aws_lambda_function.this.function_name
}

output "http_api_url" {
  description = "Buffered endpoint (Mangum), or null when create_http_api is false."
  value       = var.create_http_api ? aws_apigatewayv2_api.http[0].api_endpoint : null
}

output "dashboard_name" {
  value = var.create_dashboard ? aws_cloudwatch_dashboard.this[0].dashboard_name : null
}

output "ingest_source" {
  description = "s3://bucket/prefix whose uploads and deletions update the collections covering them, or null."
  value       = var.ingest_bucket_name == "" ? null : "s3://${var.ingest_bucket_name}/${var.ingest_bucket_prefix}"
}
