#!/usr/bin/env bash
# shellcheck shell=bash
# ==============================================================================
# TEST STAND-IN for bashio (tests/image/, never shipped): the few functions the
# add-on's run and finish scripts call, with the real library's behaviour.
#
# - bashio::config reads the options from the Supervisor API, as real bashio does
#   (GET ${SUPERVISOR_API:-http://supervisor}/addons/self/options/config with
#   "Authorization: Bearer ${SUPERVISOR_TOKEN}"), NOT from /data/options.json. When
#   the Supervisor cannot be asked, it logs an error and every option falls back to
#   the default given to bashio::config: the real library's quiet failure mode.
# - Values are printed the way its jq query prints them: strings raw, booleans as
#   true/false, arrays one element per line, objects as JSON, missing/null as the
#   default ("null" without one).
# - Logs go to stdout (even from inside a command substitution) as "[HH:MM:SS] LEVEL: message", at INFO level and above.
# Differences: no response cache in /tmp/.bashio (the API is asked on every call), no
# colours or LOG_LEVEL/LOG_FORMAT, no `!secret` values, and none of the hundreds of
# other functions (services, discovery, ingress...).
# ==============================================================================

__BASHIO_SUPERVISOR_API="${SUPERVISOR_API:-http://supervisor}"
__BASHIO_SUPERVISOR_TOKEN="${SUPERVISOR_TOKEN:-}"

# Like the real library, logs go to a copy of the stdout the library was loaded with, so
# that a log line inside $(bashio::config ...) reaches the log, not the value.
exec {__BASHIO_LOG_FD}>&1
bashio::log() {
    local level=$1
    shift
    printf '[%s] %s: %s\n' "$(date +%T)" "${level}" "$*" >&"${__BASHIO_LOG_FD}"
}
bashio::log.info() { bashio::log INFO "$@"; }
bashio::log.warning() { bashio::log WARNING "$@"; }
bashio::log.error() { bashio::log ERROR "$@"; }
bashio::log.fatal() { bashio::log FATAL "$@"; }
bashio::log.debug() { :; }

bashio::exit.nok() {
    if [[ -n "${1:-}" ]]; then
        bashio::log.fatal "$1"
    fi
    exit 1
}

# METHOD RESOURCE: call the Supervisor API; prints its "data" as JSON. Fails (after logging) on a
# connection error, a non-200 status or {"result": "error"}, as the real one does.
bashio::api.supervisor() {
    local method=$1 resource=$2
    local response status body
    if ! response=$(curl --silent --show-error --max-time 10 --write-out '\n%{http_code}' \
        -H "Authorization: Bearer ${__BASHIO_SUPERVISOR_TOKEN}" \
        --request "${method}" "${__BASHIO_SUPERVISOR_API}${resource}" 2>&1); then
        bashio::log.error "Something went wrong contacting the API"
        return 1
    fi
    status=${response##*$'\n'}
    body=${response%"${status}"}
    if [[ "${status}" != 200 ]] || [[ "$(jq -r '.result // empty' <<<"${body}")" == error ]]; then
        bashio::log.error "Requested resource ${resource} failed with HTTP ${status}"
        return 1
    fi
    jq -c 'if .data == {} then empty else .data end' <<<"${body}"
}

bashio::addon.config() {
    local options
    if ! options=$(bashio::api.supervisor GET /addons/self/options/config); then
        bashio::log.error "Failed to get addon config from Supervisor API"
        return 1
    fi
    if [[ -z "${options}" ]]; then
        options='{}'  # an add-on without options: bashio makes it an empty object too
    fi
    printf '%s' "${options}"
}

# bashio::config KEY [DEFAULT]: KEY is a jq path without the leading dot (model.name).
bashio::config() {
    local key=$1
    local default_value=${2:-null}
    local options result
    # The real library ignores this failure too: every option is then its default.
    options=$(bashio::addon.config) || options='{}'
    result=$(jq -r --arg missing "${default_value}" "
        if (.${key} == null) then \$missing
        elif (.${key} | type) == \"array\" then .${key}[]
        elif (.${key} | type) == \"object\" then (.${key} | tojson)
        else .${key} end" <<<"${options}")
    printf '%s' "${result}"
}

bashio::config.has_value() {
    local value
    value=$(bashio::config "$1")
    [[ -n "${value}" && "${value}" != null ]]
}

bashio::config.true() {
    [[ "$(bashio::config "$1" false)" == true ]]
}
