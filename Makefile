# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/backoffice_bench
PG_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/backoffice
PG_TEST_REDIS_URL ?= redis://127.0.0.1:6379/1
# The cache gets a Redis database of its own (the default would be the broker's + 1).
PG_TEST_CACHE_REDIS_URL ?= redis://127.0.0.1:6379/3
RELIABILITY_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/backoffice_reliability
RELIABILITY_REDIS_URL ?= redis://127.0.0.1:6379/2
RELIABILITY_CACHE_REDIS_URL ?= redis://127.0.0.1:6379/4
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/5

.PHONY: run setup test test-pg test-dates reliability lint format bench clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# A local .env with a fresh secret, an API token and the admin password.
.env:
	@$(PYTHON) -c "import secrets; print(f'DEBUG=true\nSECRET_KEY={secrets.token_urlsafe(50)}\nJOBS_API_TOKEN={secrets.token_urlsafe(32)}\nADMIN_PASSWORD={secrets.token_urlsafe(12)}')" > .env
	@echo "wrote .env (DEBUG=true, a new SECRET_KEY, JOBS_API_TOKEN and ADMIN_PASSWORD)"

setup: $(VENV)/.runtime .env
	set -a && . ./.env && set +a && \
	$(PY) manage.py migrate --no-input -v 0 && \
	$(PY) manage.py ensure_admin && \
	$(PY) manage.py seed_demo && \
	$(PY) manage.py sync_schedules

run: setup
	PORT=$(PORT) bin/serve

test: $(VENV)/.dev
	$(PY) -m pytest

# The same suite on PostgreSQL with the Redis broker (what .ci/run also does).
test-pg: $(VENV)/.dev
	DATABASE_URL=$(PG_TEST_DATABASE_URL) REDIS_URL=$(PG_TEST_REDIS_URL) \
	  CACHE_REDIS_URL=$(PG_TEST_CACHE_REDIS_URL) $(PY) -m pytest

# The suite again at three pinned moments (tests/clock.py): a 28-day
# February's end, a 31-day month's end with the machine in another time zone,
# and the night Europe/Berlin (the scheduler's zone here) moves to summer time.
# Browser tests are left out: they reason about pages, not dates.
DATES_PYTEST := $(PY) -m pytest -q -p no:cacheprovider -m "not browser"
test-dates: $(VENV)/.dev
	TEST_CLOCK=2027-02-28T23:30:00Z $(DATES_PYTEST)
	TEST_CLOCK=2027-01-31T23:40:00Z TZ=America/New_York $(DATES_PYTEST)
	TEST_CLOCK=2027-03-28T00:30:00Z SCHEDULER_TIMEZONE=Europe/Berlin $(DATES_PYTEST)

# Reliability drills with real qcluster processes, on PostgreSQL and Redis
# (local ones started here if they are down, as .ci/run does; a failed start is
# left for the drills to report). Not part of `make test`.
reliability: $(VENV)/.dev
	-@pg_isready -q -h 127.0.0.1 -p 5432 || { \
	  pg_ctlcluster --skip-systemctl-redirect "$$(ls /etc/postgresql)" main start && \
	  for _ in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; }
	-@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" && \
	  for _ in $$(seq 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 1; done; }
	DATABASE_URL=$(RELIABILITY_DATABASE_URL) REDIS_URL=$(RELIABILITY_REDIS_URL) \
	  CACHE_REDIS_URL=$(RELIABILITY_CACHE_REDIS_URL) \
	  $(PY) -m pytest reliability -s -p no:cacheprovider

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(VENV)/.dev
	DATABASE_URL=$(BENCH_DATABASE_URL) BENCH_REDIS_URL=$(BENCH_REDIS_URL) $(PY) -m bench

clean:
	rm -rf $(VENV) db.sqlite3 db.sqlite3-* .pytest_cache
