"""AWS Bedrock (boto3 `bedrock-runtime`): Converse / ConverseStream for chat, InvokeModel for embeddings.

The mapping lives in `request` (OpenAI -> Converse), `response` (Converse and
stream events -> OpenAI), `embeddings` (Titan / Cohere InvokeModel bodies) and
`errors` (botocore exceptions -> gateway errors); `provider` alone touches boto3.
Wire facts: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_Operations_Amazon_Bedrock_Runtime.html
"""

from translators.bedrock.embeddings import from_bedrock_embeddings, to_bedrock_embedding_bodies
from translators.bedrock.errors import map_bedrock_error
from translators.bedrock.provider import BedrockProvider
from translators.bedrock.request import to_bedrock_request
from translators.bedrock.response import (
    BedrockStreamState,
    from_bedrock_event,
    from_bedrock_response,
    from_bedrock_stop_reason,
)

__all__ = [
    "BedrockProvider",
    "BedrockStreamState",
    "from_bedrock_embeddings",
    "from_bedrock_event",
    "from_bedrock_response",
    "from_bedrock_stop_reason",
    "map_bedrock_error",
    "to_bedrock_embedding_bodies",
    "to_bedrock_request",
]
