"""Running triggergate on AWS: the Lambda entry points and the DynamoDB table definition.

Nothing here is imported unless AWS is used, so other deployments never load boto3 or Mangum.
"""
