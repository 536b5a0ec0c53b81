terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.29" # invoked_via_function_url on aws_lambda_permission
    }
  }
}
