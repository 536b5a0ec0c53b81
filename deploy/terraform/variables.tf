variable "name" {
  description = "Function name (also the log group /aws/lambda/<name>)."
  type        = string
  default     = "omni-llm"
}

variable "image_uri" {
  description = "ECR image URI with tag or digest, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/omni-llm:latest."
  type        = string
}

variable "architecture" {
  description = "arm64 or x86_64; must match the platform the image was built for."
  type        = string
  default     = "arm64"
  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "memory_size" {
  type    = number
  default = 1024
}

variable "timeout" {
  description = "Seconds; a streamed answer must finish within it."
  type        = number
  default     = 300
}

variable "log_retention_in_days" {
  type    = number
  default = 30
}

variable "function_url_auth_type" {
  description = "NONE (public, guarded by the gateway key) or AWS_IAM (SigV4-signed callers)."
  type        = string
  default     = "NONE"
  validation {
    condition     = contains(["NONE", "AWS_IAM"], var.function_url_auth_type)
    error_message = "function_url_auth_type must be NONE or AWS_IAM."
  }
}

variable "gateway_key_secret_arn" {
  description = "Secrets Manager secret (plain string) with the key clients send as Bearer; becomes OMNI_LLM_API_KEY. Required unless the URL is AWS_IAM and no HTTP API is created."
  type        = string
  default     = ""
}

variable "provider_keys_secret_arn" {
  description = "Secrets Manager secret whose SecretString is a JSON object of provider variables (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...). Empty = none."
  type        = string
  default     = ""
}

variable "bedrock_model_ids" {
  description = "Foundation-model ids the role may invoke (any region)."
  type        = list(string)
  default     = ["anthropic.claude-sonnet-4-5-20250929-v1:0", "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0", "amazon.titan-embed-text-v2:0"]
}

variable "bedrock_inference_profile_ids" {
  description = "Cross-region inference profile ids (in this account) the role may invoke."
  type        = list(string)
  default     = ["us.anthropic.claude-sonnet-4-5-20250929-v1:0", "us.amazon.nova-pro-v1:0", "us.amazon.nova-lite-v1:0"]
}

variable "create_http_api" {
  description = "Also create an API Gateway HTTP API in front of the Mangum handler (buffered, 30 s cap)."
  type        = bool
  default     = false
}

variable "environment" {
  description = "Extra non-secret environment variables (e.g. AWS_REGION-independent settings, OLLAMA_BASE_URL)."
  type        = map(string)
  default     = {}
}

variable "enable_emf_metrics" {
  description = "One CloudWatch Embedded Metric Format line per model request (namespace OmniLLM); sets OMNI_LLM_EMF, which the shipped models.yaml reads."
  type        = bool
  default     = true
}

variable "otlp_endpoint" {
  description = "OTLP/HTTP endpoint for OpenTelemetry traces (e.g. an ADOT collector exporting to X-Ray). Empty = no OpenTelemetry traces."
  type        = string
  default     = ""
}

variable "create_dashboard" {
  description = "Create a CloudWatch dashboard of the EMF metrics."
  type        = bool
  default     = true
}

variable "ingest_bucket_name" {
  description = "S3-triggered ingestion (docs/rag.md): an existing bucket whose ObjectCreated:* / ObjectRemoved:* notifications invoke the function, which updates the rag.collections whose sources (s3://bucket/prefix/) cover the object. The role may read it. Empty = none. The module then owns the bucket's notification configuration (aws_s3_bucket_notification replaces any other)."
  type        = string
  default     = ""
}

variable "ingest_bucket_prefix" {
  description = "Only keys under this prefix (e.g. handbook/) notify the function. Empty = the whole bucket."
  type        = string
  default     = ""
}
