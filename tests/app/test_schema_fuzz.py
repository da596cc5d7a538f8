"""schemathesis against the OpenAPI schema of the live app: whatever it sends, no 5xx."""
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from attnlens.server import create_app
from attnlens.server.settings import Settings

app = create_app(Settings(device="cpu"), load_in_background=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def started_app():
    with TestClient(app):  # runs the lifespan: the model is loaded and warmed up
        yield


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    case.call_and_validate(checks=[not_a_server_error])
