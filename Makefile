# Cairn: `make dev` runs it locally, `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: dev test lint template generate scaffold unit bench fmt build build-test fuzz

## Local development: builds the functions and the `cairn` dev server (cargo shows the progress),
## then runs `cairn dev --watch`: EventBridge, Scheduler and the dashboard on http://127.0.0.1:8288,
## every function under `cargo lambda watch` on :9000, state in .cairn/dev.db. Ctrl-C stops both.
dev:
	@PATH="$$(infra/local/ensure-tools.sh cargo-lambda)/bin:$$PATH"; export PATH; \
	  $(CARGO) build --workspace --bins -F cairn-tests/watch && \
	  CAIRN_WATCH_FEATURES=cairn-tests/watch exec target/debug/cairn dev --watch --port $${CAIRN_DEV_PORT:-8288}

## Every test: formatting, clippy, the template lint, unit, integration and doc tests, then
## `cairn new` end to end on a scratch copy of the project.
test: lint template unit scaffold

## Formatting, clippy, infra/local/check-lambda-deps.sh: no Lambda binary (functions/*) nor cairn-aws links
## SQLite (cairn's `sqlite` feature is for the dev server, local runs and tests), and
## infra/local/check-module-cycles.py: no crate's modules depend on each other in a cycle.
lint:
	$(CARGO) fmt --all -- --check
	python3 infra/local/check-module-cycles.py
	CARGO=$(CARGO) infra/local/check-lambda-deps.sh
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Unit, integration and doc tests, with moto (DynamoDB, EventBridge, SQS, Scheduler) started
## on a free port for the AWS tests and stopped afterwards, and the official `inngest` npm
## package for the differential tests of the Inngest endpoint.
unit:
	test -d tests/conformance-ts/node_modules/inngest || (cd tests/conformance-ts && npm install --no-audit --no-fund --silent)
	infra/local/ensure-tools.sh chromium >/dev/null
	infra/local/with-services.sh $(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

## `cairn new nightly-report` on a scratch copy: its test, the template check, a run under `cairn dev`.
scaffold:
	CARGO=$(CARGO) infra/local/test-scaffold.sh

## template.yaml through cfn-lint and `sam validate --lint` (offline).
template:
	infra/local/lint-template.sh

## template.yaml's function resources regenerated from the functions (functions/registry);
## `make test` fails (infra/dev/tests/generate.rs) until the file matches.
generate:
	$(CARGO) run -q -p cairn-dev --bin cairn -- template

## `sam build`: every function built with cargo-lambda (release) for ARCH (x86_64 unless
## ARCH=arm64, which needs the aarch64-unknown-linux-gnu Rust target); deploy with the same
## `--parameter-overrides Architecture=$(ARCH)`.
ARCH ?= x86_64
build:
	@if [ "$(ARCH)" = arm64 ] && ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then \
	  echo "make build ARCH=arm64 needs the aarch64-unknown-linux-gnu Rust target: rustup target add aarch64-unknown-linux-gnu (or build x86_64: make build)" >&2; exit 1; fi
	PATH="$$(infra/local/ensure-tools.sh cargo-lambda)/bin:$$PATH" "$$(infra/local/ensure-tools.sh sam)/bin/sam" build \
	  --parameter-overrides Architecture=$(ARCH)

## `sam build` checked (slow: release builds): each bootstrap exists, is an ARCH ELF, and starts
## against a local Lambda Runtime API with its state in moto. CAIRN_BUILD_FUNCTIONS picks the
## functions (HelloFunction by default, `all` for every one).
build-test:
	PATH="$$(infra/local/ensure-tools.sh cargo-lambda)/bin:$$PATH" CAIRN_SAM="$$(infra/local/ensure-tools.sh sam)/bin/sam" ARCH=$(ARCH) \
	  infra/local/with-services.sh $(CARGO) test -p cairn-tests --test build -- --nocapture

## The benchmarks of README's Performance section: the engine (criterion), then DynamoDB
## traffic per step, commit overhead and cold start against moto (release build), the Inngest
## endpoint against the TypeScript SDK, and 1,000 events through `cairn dev`.
bench:
	$(CARGO) bench -p cairn --bench engine
	python3 infra/local/criterion-medians.py
	$(CARGO) build --release -p hello --bin hello -F cairn-aws/sqlite
	$(CARGO) build --release -p cairn-tests --bin bench-aws
	infra/local/with-services.sh target/release/bench-aws target/release/hello
	test -d tests/conformance-ts/node_modules/inngest || (cd tests/conformance-ts && npm install --no-audit --no-fund --silent)
	$(CARGO) build --profile bench -p cairn-tests --bin bench-serve --bin conformance-app
	target/release/bench-serve target/release/conformance-app tests/conformance-ts 10
	infra/local/with-services.sh $(CARGO) test -p cairn-dev --test load -- --nocapture

## Coverage-guided fuzzing (cargo-fuzz; its nightly flags through RUSTC_BOOTSTRAP): every target
## for FUZZ_SECS (ten minutes), one after the other: the Inngest call-request decoder, the Lambda
## payload classifier, the dev server's PutEvents and CreateSchedule decoding, the EventBridge
## pattern matcher and CEL match expressions. The bodies (fuzz/bodies) also run in `make test`
## (tests/fuzz) on the seeds (fuzz/seeds/<target>, where crash inputs are kept); the corpus
## grows in fuzz/corpus/<target>, crashes land in fuzz/artifacts/<target>. No sanitizer: the
## code is safe Rust (`unsafe_code = "forbid"`), so ASan would only halve the speed; panics,
## overflow checks, stack overflows, timeouts and OOMs are still caught.
FUZZ_TARGETS := call_request lambda_payload put_events schedule_request event_pattern cel_match
FUZZ_SECS ?= 600
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for target in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$target && \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none $$target corpus/$$target seeds/$$target -- -max_total_time=$(FUZZ_SECS) || exit 1; \
	done

fmt:
	$(CARGO) fmt --all
