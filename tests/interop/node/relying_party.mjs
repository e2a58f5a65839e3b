// A relying party built on openid-client (panva), used unchanged, driven by
// tests/interop/test_openid_client_node.py.
//
//   node relying_party.mjs '<options as JSON>'
//
// options: issuer, client_id, client_secret (absent for a public client: "none"),
// redirect_uri, scope, flow ("code" or "device"), refresh (bool), max_age (number),
// id_token_signed_response_alg ("RS256" by default, as openid-client assumes).
//
// It speaks JSON lines. Code flow: it prints {"step": "authorize", "url"} and reads
// {"callback": "<the redirect the user came back with>"}. Device flow: it prints
// {"step": "device", "user_code", "verification_uri", "verification_uri_complete",
// "interval", "expires_in"} and polls. Either ends with {"step": "result", ...} (exit 0) or
// {"step": "error", ...} (exit 1). Every id_token is checked by openid-client: its claims
// (iss, aud, azp, exp, iat, nonce, auth_time against max_age) and, with the non-repudiation
// checks on, its signature against the server's JWKS.

import * as readline from 'node:readline'
import * as client from 'openid-client'
import * as jose from 'jose'

const options = JSON.parse(process.argv[2])

const emit = (message) => process.stdout.write(JSON.stringify(message) + '\n')

const input = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
async function receive () {
  const { value, done } = await input.next()
  if (done) throw new Error('stdin closed before the test answered')
  return JSON.parse(value)
}

// openid-client's own requests after discovery, observed through its customFetch hook:
// each path fetched, and what the token endpoint answered, in order (the error code of
// each refusal, "ok" for tokens).
const fetched = []
const tokenAnswers = []
function observe (config) {
  const tokenEndpoint = config.serverMetadata().token_endpoint
  config[client.customFetch] = async (url, init) => {
    const response = await fetch(url, init)
    fetched.push(new URL(url).pathname)
    if (url === tokenEndpoint) {
      const body = await response.clone().json().catch(() => ({}))
      tokenAnswers.push(response.ok ? 'ok' : body.error ?? String(response.status))
    }
    return response
  }
}

async function configure () {
  const metadata = {}
  if (options.id_token_signed_response_alg) {
    metadata.id_token_signed_response_alg = options.id_token_signed_response_alg
  }
  const authentication = options.client_secret
    ? client.ClientSecretBasic(options.client_secret)
    : client.None()
  const config = await client.discovery(new URL(options.issuer), options.client_id, metadata, authentication, {
    // The test server is plain http on loopback; every other check stays on.
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks, observe]
  })
  return config
}

async function describe (config, tokens) {
  const claims = tokens.claims()
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub)
  return {
    scope: tokens.scope,
    token_type: tokens.token_type,
    expires_in: tokens.expiresIn(),
    has_refresh_token: typeof tokens.refresh_token === 'string',
    id_token_header: jose.decodeProtectedHeader(tokens.id_token),
    claims,
    userinfo
  }
}

// An error as JSON, with its causes (openid-client wraps oauth4webapi's errors, whose
// cause says what check failed: {claim, expected, body, ...}).
function failure (error, depth = 0) {
  if (!(error instanceof Error) || depth > 3) {
    try { return JSON.parse(JSON.stringify(error ?? null)) } catch { return String(error) }
  }
  return {
    name: error.name,
    code: error.code,
    error: error.error,
    error_description: error.error_description,
    message: error.message,
    cause: error.cause === undefined ? undefined : failure(error.cause, depth + 1)
  }
}

async function refresh (config, tokens, subject) {
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token)
  const userinfo = await client.fetchUserInfo(config, refreshed.access_token, subject)
  const outcome = {
    rotated: refreshed.refresh_token !== tokens.refresh_token,
    scope: refreshed.scope,
    id_token: typeof refreshed.id_token === 'string',
    userinfo_sub: userinfo.sub
  }
  // The first refresh token again (a replay), then the rotated one: with reuse detection
  // the replay is refused and ends the grant, so the second is refused too.
  for (const [label, token] of [['replayed', tokens.refresh_token], ['after_replay', refreshed.refresh_token]]) {
    try {
      await client.refreshTokenGrant(config, token)
      outcome[label] = 'accepted'
    } catch (error) {
      outcome[label] = error.error ?? error.code ?? error.message
    }
  }
  return outcome
}

async function codeFlow (config) {
  const verifier = client.randomPKCECodeVerifier()
  const nonce = client.randomNonce()
  const state = client.randomState()
  const parameters = {
    redirect_uri: options.redirect_uri,
    scope: options.scope,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    nonce,
    state
  }
  if (options.max_age !== undefined) parameters.max_age = String(options.max_age)
  emit({ step: 'authorize', url: client.buildAuthorizationUrl(config, parameters).href, nonce })
  const { callback } = await receive()
  const tokens = await client.authorizationCodeGrant(config, new URL(callback), {
    pkceCodeVerifier: verifier,
    expectedNonce: nonce,
    expectedState: state,
    idTokenExpected: true,
    maxAge: options.max_age
  })
  const result = { nonce, ...(await describe(config, tokens)) }
  if (options.refresh) result.refresh = await refresh(config, tokens, result.claims.sub)
  return result
}

async function deviceFlow (config) {
  const device = await client.initiateDeviceAuthorization(config, { scope: options.scope })
  emit({
    step: 'device',
    user_code: device.user_code,
    verification_uri: device.verification_uri,
    verification_uri_complete: device.verification_uri_complete,
    interval: device.interval,
    expires_in: device.expires_in
  })
  const started = Date.now()
  const tokens = await client.pollDeviceAuthorizationGrant(config, device)
  const result = { seconds: (Date.now() - started) / 1000, ...(await describe(config, tokens)) }
  if (options.refresh) result.refresh = await refresh(config, tokens, result.claims.sub)
  return result
}

try {
  const config = await configure()
  const server = config.serverMetadata()
  const result = options.flow === 'device' ? await deviceFlow(config) : await codeFlow(config)
  emit({ step: 'result', issuer: server.issuer, fetched, token_endpoint_answers: tokenAnswers, ...result })
  process.exit(0)
} catch (error) {
  emit({ step: 'error', fetched, token_endpoint_answers: tokenAnswers, ...failure(error) })
  process.exit(1)
}
