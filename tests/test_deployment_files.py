"""The deployment files cannot be run here (no Docker engine), so check what they promise."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_compose_runs_web_workers_beat_postgres_and_redis_with_health_checks():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    # What `docker compose up` starts: every service outside a profile.
    services = {
        name: service
        for name, service in compose["services"].items()
        if not service.get("profiles")
    }
    assert set(services) == {
        "web",
        "gateway",
        "model-server",
        "worker",
        "trainer",
        "beat",
        "postgres",
        "redis",
    }
    for name in ("web", "gateway", "model-server", "worker", "trainer", "postgres", "redis"):
        assert "healthcheck" in services[name], name
    assert "gunicorn" in services["web"]["command"]
    assert "celery" in services["worker"]["command"] and "beat" in services["beat"]["command"]
    # Every queue has a consumer; training runs one job at a time on its own worker.
    assert "--queues=default,inference" in services["worker"]["command"]
    assert "--queues=training --concurrency=1" in services["trainer"]["command"]
    for name in ("web", "gateway", "model-server", "worker", "trainer", "beat"):
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://")
        assert environment["CELERY_BROKER_URL"].startswith("redis://")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert set(compose["volumes"]) >= {"postgres-data", "redis-data"}


def test_compose_runs_the_gateway_under_an_asgi_server_beside_the_local_model_server():
    """Issue 15: applications call /v1/ (an ASGI application: gunicorn's WSGI web server has
    no chat path), whose local versions the model server answers, reached only by the gateway."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    gateway, model_server = compose["services"]["gateway"], compose["services"]["model-server"]
    command = gateway["command"].split()
    assert command[:2] == ["uvicorn", "config.asgi:application"]
    assert command[command.index("--lifespan") + 1] == "on"  # the request log written at stop
    assert gateway["ports"] == ["8001:8001"]
    environment = gateway["environment"]
    assert environment["FTPORTAL_GATEWAY_LOCAL_SERVER_URL"] == "http://model-server:8002"
    assert (
        environment["DJANGO_SECRET_KEY"]
        == compose["services"]["web"]["environment"]["DJANGO_SECRET_KEY"]
    )
    assert "providers.local.serve --host 0.0.0.0 --port 8002" in model_server["command"]
    assert "ports" not in model_server  # it asks for no key


def test_the_gpu_profile_runs_vllm_with_runtime_lora_loading_over_the_artifact_store():
    """Issue 15, item 3: vLLM's OpenAI-compatible server on a GPU, started only with
    `--profile gpu`, serving adapters loaded at run time from the app's artifact store."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    vllm = compose["services"]["vllm"]
    assert vllm["profiles"] == ["gpu"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    command = vllm["command"].split()
    assert "--enable-lora" in command
    assert command[command.index("--max-loras") + 1] == "${VLLM_MAX_LORAS:-4}"
    assert "--max-lora-rank" in command
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    # Read-only, at the path where the app containers write the artifact store (/data/artifacts
    # under FTPORTAL_VAR_DIR=/data), so an adapter's directory names the same place on both.
    assert "ftportal-data:/data:ro" in vllm["volumes"]
    assert compose["services"]["worker"]["environment"]["FTPORTAL_VAR_DIR"] == "/data"
    [gpu] = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    # Whoever reaches it can load adapters: only the project's own network does.
    assert "ports" not in vllm
    assert "healthcheck" in vllm


def test_the_image_and_the_local_install_get_the_same_packages():
    dockerfile = (REPO / "Dockerfile").read_text()
    install = (REPO / "scripts" / "install.sh").read_text()
    for script in (dockerfile, install):
        assert "-r requirements.txt" in script
        assert "--no-deps -r requirements-data.txt" in script
    # The web and worker containers share the var directory, where uploads wait for the worker.
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name in ("web", "worker", "trainer"):
        assert "ftportal-data:/data" in compose["services"][name]["volumes"]
        assert compose["services"][name]["environment"]["FTPORTAL_VAR_DIR"] == "/data"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme
    assert (REPO / ".ci" / "run").read_text().strip().endswith("make test")


def test_the_health_check_answers_without_a_login(client, db):
    response = client.get("/healthz")
    # 200 even with no worker running: the web container's health does not depend on them.
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["database"] == "ok"
    assert set(response.json()["queues"]) == {"default", "training", "inference"}


def test_the_embedded_broker_keeps_all_its_files_under_the_var_dir(tmp_path: Path) -> None:
    """Kombu's filesystem transport writes its exchange tables to ./control unless told
    otherwise, which under `make run` is the repository itself."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CELERY_BROKER_URL": "filesystem://",
        "FTPORTAL_VAR_DIR": str(tmp_path),
    }
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from config import settings as s; "
            "print('\\n'.join(map(str, s.CELERY_BROKER_TRANSPORT_OPTIONS.values())))",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(shown) == 4  # in, out, processed and control folders
    assert all(Path(folder).is_relative_to(tmp_path) for folder in shown), shown
