# Omni-LLM on AWS Lambda from an ECR image: the same resources as deploy/template.yaml.
# The Function URL (RESPONSE_STREAM, the Lambda Web Adapter in front of `omni-llm serve`) streams;
# the optional HTTP API runs the same image with the Mangum handler (buffered).
#
# Secrets: the module reads the Secrets Manager secrets at apply time and puts the values in the
# function's environment (encrypted at rest by Lambda). They are therefore also in the Terraform
# state: keep the state in an encrypted, access-controlled backend.

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

data "aws_secretsmanager_secret_version" "gateway_key" {
  count     = var.gateway_key_secret_arn == "" ? 0 : 1
  secret_id = var.gateway_key_secret_arn
}

data "aws_secretsmanager_secret_version" "provider_keys" {
  count     = var.provider_keys_secret_arn == "" ? 0 : 1
  secret_id = var.provider_keys_secret_arn
}

locals {
  partition  = data.aws_partition.current.partition
  public_url = var.function_url_auth_type == "NONE"
  secret_environment = merge(
    var.provider_keys_secret_arn == "" ? {} : jsondecode(data.aws_secretsmanager_secret_version.provider_keys[0].secret_string),
    var.gateway_key_secret_arn == "" ? {} : { OMNI_LLM_API_KEY = data.aws_secretsmanager_secret_version.gateway_key[0].secret_string },
  )
  observability_environment = {
    OMNI_LLM_EMF                = var.enable_emf_metrics ? "true" : "false"
    OTEL_EXPORTER_OTLP_ENDPOINT = var.otlp_endpoint
    OTEL_SERVICE_NAME           = var.name
    # W3C trace context from clients, and X-Ray's header from the Lambda service.
    OTEL_PROPAGATORS = "tracecontext,baggage,xray"
  }
  ingest     = var.ingest_bucket_name != ""
  ingest_arn = "arn:${local.partition}:s3:::${var.ingest_bucket_name}"
  bedrock_resources = concat(
    [for id in var.bedrock_model_ids : "arn:${local.partition}:bedrock:*::foundation-model/${id}"],
    [for id in var.bedrock_inference_profile_ids : "arn:${local.partition}:bedrock:*:${data.aws_caller_identity.current.account_id}:inference-profile/${id}"],
  )
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/aws/lambda/${var.name}"
  retention_in_days = var.log_retention_in_days
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "permissions" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }
  statement {
    # X-Ray accepts no resource-level restriction.
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
  dynamic "statement" {
    for_each = local.ingest ? [1] : []
    content {
      actions   = ["s3:GetObject"]
      resources = ["${local.ingest_arn}/${var.ingest_bucket_prefix}*"]
    }
  }
  dynamic "statement" {
    # Listing: `omni-llm rag ingest` of a prefix; and without it S3 answers a HEAD of a deleted key with 403
    # instead of 404, so an ObjectRemoved event could never be confirmed.
    for_each = local.ingest ? [1] : []
    content {
      actions   = ["s3:ListBucket"]
      resources = [local.ingest_arn]
    }
  }
  dynamic "statement" {
    for_each = length(local.bedrock_resources) > 0 ? [1] : []
    content {
      # Converse/ConverseStream are authorised by these two actions.
      actions   = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
      resources = local.bedrock_resources
    }
  }
}

resource "aws_iam_role" "this" {
  name               = "${var.name}-lambda"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "this" {
  name   = "${var.name}-lambda"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.permissions.json
}

# The streaming entry: the image's default command, `omni-llm serve` behind the Lambda Web Adapter.
resource "aws_lambda_function" "this" {
  function_name = var.name
  package_type  = "Image"
  image_uri     = var.image_uri
  architectures = [var.architecture]
  memory_size   = var.memory_size
  timeout       = var.timeout
  role          = aws_iam_role.this.arn

  tracing_config {
    mode = "Active"
  }
  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.this.name
  }
  environment {
    variables = merge(var.environment, local.secret_environment, local.observability_environment, {
      AWS_LWA_INVOKE_MODE = "response_stream"
      # S3 notifications reach `omni-llm serve` as a POST here; a failed record answers 207, which the
      # adapter turns into a failed invocation, so Lambda retries the event (as the image sets too).
      AWS_LWA_PASS_THROUGH_PATH  = "/events"
      AWS_LWA_ERROR_STATUS_CODES = "207"
      # 0.0.0.0 keeps `omni-llm serve`'s no-key refusal armed; an IAM-only URL needs loopback only.
      OMNI_LLM_HOST = local.public_url ? "0.0.0.0" : "127.0.0.1"
    })
  }

  depends_on = [aws_iam_role_policy.this]
}

resource "aws_lambda_function_url" "this" {
  function_name      = aws_lambda_function.this.function_name
  authorization_type = var.function_url_auth_type
  invoke_mode        = "RESPONSE_STREAM"

  lifecycle {
    precondition {
      condition     = var.gateway_key_secret_arn != "" || (!local.public_url && !var.create_http_api)
      error_message = "A public (NONE) Function URL or an HTTP API needs gateway_key_secret_arn."
    }
  }
}

# AuthType NONE still needs a resource policy; since October 2025 new URLs need both actions.
resource "aws_lambda_permission" "public_url" {
  count                  = local.public_url ? 1 : 0
  statement_id           = "OmniLLMPublicFunctionUrl"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.this.function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}

resource "aws_lambda_permission" "public_invoke" {
  count                    = local.public_url ? 1 : 0
  statement_id             = "OmniLLMPublicFunctionUrlInvoke"
  action                   = "lambda:InvokeFunction"
  function_name            = aws_lambda_function.this.function_name
  principal                = "*"
  invoked_via_function_url = true
}

# S3-triggered ingestion: the bucket's notifications invoke the streaming function (asynchronously).
resource "aws_lambda_permission" "ingest_bucket" {
  count          = local.ingest ? 1 : 0
  statement_id   = "OmniLLMIngestBucket"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.this.arn
  principal      = "s3.amazonaws.com"
  source_arn     = local.ingest_arn
  source_account = data.aws_caller_identity.current.account_id
}

resource "aws_s3_bucket_notification" "ingest" {
  count  = local.ingest ? 1 : 0
  bucket = var.ingest_bucket_name

  lambda_function {
    id                  = "omni-llm-ingest"
    lambda_function_arn = aws_lambda_function.this.arn
    events              = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    filter_prefix       = var.ingest_bucket_prefix == "" ? null : var.ingest_bucket_prefix
  }

  depends_on = [aws_lambda_permission.ingest_bucket] # S3 tests the target when it is configured
}

# Optional buffered entry: same image, the Mangum handler through the Runtime Interface Client.
resource "aws_lambda_function" "mangum" {
  count         = var.create_http_api ? 1 : 0
  function_name = "${var.name}-mangum"
  package_type  = "Image"
  image_uri     = var.image_uri
  architectures = [var.architecture]
  memory_size   = var.memory_size
  timeout       = 30
  role          = aws_iam_role.this.arn

  image_config {
    command = ["proxy.lambda_handler.handler"]
  }
  tracing_config {
    mode = "Active"
  }
  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.this.name
  }
  environment {
    variables = merge(var.environment, local.secret_environment)
  }

  depends_on = [aws_iam_role_policy.this]
}

resource "aws_apigatewayv2_api" "http" {
  count         = var.create_http_api ? 1 : 0
  name          = "${var.name}-http"
  protocol_type = "HTTP"
  target        = aws_lambda_function.mangum[0].arn
}

resource "aws_lambda_permission" "http_api" {
  count         = var.create_http_api ? 1 : 0
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.mangum[0].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "arn:${local.partition}:execute-api:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:${aws_apigatewayv2_api.http[0].id}/*"
}

# The EMF metrics (namespace OmniLLM, dimensions Model and Provider) on one dashboard.
resource "aws_cloudwatch_dashboard" "this" {
  count          = var.create_dashboard ? 1 : 0
  dashboard_name = "${var.name}-omni-llm"
  dashboard_body = jsonencode({
    widgets = [
      for i, w in [
        { title = "Requests by model", metric = "omni_llm.requests.total", stats = ["Sum"], period = 60 },
        { title = "Latency p50 / p99 (ms)", metric = "omni_llm.requests.duration_ms", stats = ["p50", "p99"], period = 60 },
        { title = "Errors by provider", metric = "omni_llm.errors.by_provider", stats = ["Sum"], period = 60 },
        { title = "Cost by model (USD)", metric = "omni_llm.costs.by_model_usd", stats = ["Sum"], period = 3600 },
        { title = "Cold starts", metric = "omni_llm.container.cold_starts", stats = ["Sum"], period = 300 },
        { title = "RAG retrieval (ms)", metric = "omni_llm.rag.retrieval_time_ms", stats = ["p50"], period = 60 },
        ] : {
        type   = "metric"
        x      = (i % 2) * 12
        y      = floor(i / 2) * 6
        width  = 12
        height = 6
        properties = {
          title  = w.title
          region = data.aws_region.current.region
          period = w.period
          view   = "timeSeries"
          metrics = [for j, stat in w.stats : [{
            id         = "m${j}"
            expression = "SEARCH('{OmniLLM,Model,Provider} MetricName=\"${w.metric}\"', '${stat}', ${w.period})"
          }]]
        }
      }
    ]
  })
}
