// A real, certified OpenID Provider (npm `oidc-provider`, pinned in
// package.json) for mcpgate's end-to-end tests. Test-only: it accepts any
// login for a configured account, and it hands its private signing key to
// whoever asks at /test/keys.
//
// Usage: node oidc-provider.mjs CONFIG.json
//
// tests/setup-peers copies this file next to its node_modules (ESM resolves
// bare imports from the script's own folder and ignores NODE_PATH); the harness
// (tests/src/idp.rs) runs that copy. It listens on 127.0.0.1, port picked by
// the OS, and prints exactly one line on stdout when ready:
//   {"issuer":"http://127.0.0.1:PORT"}
// Logs go to stderr only. It exits when stdin closes (a killed test leaves
// nothing running) and on SIGTERM.
//
// CONFIG.json:
//   {
//     "accounts": {                       // the account id is the `sub`
//       "alice": { "email": "alice@example.com", "email_verified": true,
//                  "groups": ["eng"] }
//     },
//     "clients": [                        // oidc-provider client metadata
//       { "client_id": "mcpgate-cli",
//         "token_endpoint_auth_method": "none",
//         "application_type": "native",
//         "grant_types": ["authorization_code", "refresh_token",
//           "urn:ietf:params:oauth:grant-type:device_code"],
//         "response_types": ["code"],
//         "redirect_uris": ["http://127.0.0.1/callback"] },
//       { "client_id": "ci-runner", "client_secret": "...",
//         "token_endpoint_auth_method": "client_secret_basic",
//         "grant_types": ["client_credentials"], "response_types": [],
//         "redirect_uris": [],
//         "x_token_claims": { "repository": "acme/app", "ref": "refs/heads/main" } }
//     ],                                  // x_token_claims (optional, stripped
//                                         //   before oidc-provider sees it): claims
//                                         //   set on this client's client-
//                                         //   credentials access tokens, over the
//                                         //   standard ones (`sub` may be replaced)
//     "resource": "urn:mcpgate-broker",   // the one resource indicator (absolute
//                                         //   URI); the default for every grant
//     "resource_scope": "mcp",            // optional: scopes the resource server
//                                         //   knows, space-separated (default "mcp")
//     "ttl": { "AccessToken": 600, "IdToken": 600,      // optional, seconds
//              "RefreshToken": 3600, "DeviceCode": 600 },
//     "device_interval": 1                // optional: the `interval` the device
//                                         //   authorization response names (1)
//   }
//
// What it issues:
//   - Access tokens for the resource are RFC 9068 JWTs (`typ: at+jwt`), ES256,
//     `aud` = the resource, whatever grant. User tokens carry `email`,
//     `email_verified` and `groups`; client-credentials tokens carry
//     `client_id` and `sub` = the client id, then the client's x_token_claims
//     over them.
//   - ID tokens (ES256) carry the claims of the granted scopes (`email`,
//     `groups`, ...) directly: conformIdTokenClaims is off, no userinfo needed.
//   - Account claims are read at token time, so POST /test/accounts/:id changes
//     the next token, a refreshed one included.
//   - Refresh tokens: oidc-provider's default rule, for a client allowed the
//     refresh_token grant whose grant holds `offline_access` (an authorization
//     request keeps `offline_access` only with `prompt=consent`). They rotate on
//     every use; presenting a used one is `invalid_grant` and revokes the whole
//     grant (every token stored for it, the rotated refresh token included).
//   - PKCE (S256) is required of public clients.
//
// Interactions, plain HTTP for a headless harness with a cookie jar:
//   GET  /interaction/:uid          -> {"uid","prompt","params"}: prompt is
//                                      "login" or "consent"
//   POST /interaction/:uid/login    form account=ID -> 303 back to the provider
//   POST /interaction/:uid/consent  grants everything asked for -> 303
//   POST /interaction/:uid/abort    access_denied -> 303
// The device flow's pages (/device) are oidc-provider's own forms.
//
// Test administration (no authentication: a test IdP on 127.0.0.1 only):
//   POST   /test/accounts/:id  JSON account body: creates or replaces it
//   DELETE /test/accounts/:id  removes it (its refresh tokens stop working)
//   POST   /test/rotate        a new ES256 key signs from now on; the old ones
//                              stay in /jwks -> {"kid"}
//   GET    /test/keys          the current signing key -> {"kid","alg",
//                              "private_pem" (PKCS#8),"public_pem" (SPKI)}
// Rotation builds a new Provider (its keystore is fixed at construction); all
// instances share one in-memory store and one cookie key, so sessions,
// interactions, grants and tokens survive it.

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';

// oidc-provider prints its notices with console.info: stdout is for the one
// ready line only.
console.log = console.error;
console.info = console.error;

const log = (...args) => console.error('oidc-provider.mjs:', ...args);

const TOKEN_CLAIMS_KEY = 'x_token_claims';

function loadConfig(path) {
  if (!path) {
    throw new Error('usage: node oidc-provider.mjs CONFIG.json');
  }
  const config = JSON.parse(readFileSync(path, 'utf8'));
  if (typeof config.resource !== 'string' || !URL.canParse(config.resource)) {
    throw new Error('config.resource must be an absolute URI');
  }
  return {
    accounts: new Map(Object.entries(config.accounts ?? {})),
    clients: config.clients ?? [],
    resource: config.resource,
    resourceScope: config.resource_scope ?? 'mcp',
    ttl: config.ttl ?? {},
    deviceInterval: config.device_interval ?? 1,
  };
}

// One in-memory store for every Provider instance of this process (the
// default memory adapter makes a new store per instance, which a key
// rotation would lose). Entries expire; grant ids index their tokens so a
// revoked grant takes its tokens along.
class SharedStore {
  #entries = new Map();

  get(key) {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    this.#entries.set(key, { value, expiresAt });
  }

  delete(key) {
    this.#entries.delete(key);
  }
}

const store = new SharedStore();

const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
]);

class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    if (this.model === 'Session') {
      store.set(`sessionUid:${payload.uid}`, id, expiresIn);
    }
    if (payload.userCode) {
      store.set(`userCode:${payload.userCode}`, id, expiresIn);
    }
    if (GRANTABLE.has(this.model) && payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      const members = store.get(grantKey) ?? new Set();
      members.add(key);
      store.set(grantKey, members);
    }
    store.set(key, payload, expiresIn);
  }

  async find(id) {
    return store.get(this.key(id));
  }

  async findByUid(uid) {
    const id = store.get(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = store.get(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = store.get(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    for (const key of store.get(grantKey) ?? []) {
      store.delete(key);
    }
    store.delete(grantKey);
  }
}

// RFC 7638 thumbprint of an EC public JWK: a stable, unique `kid`.
function thumbprint({ crv, kty, x, y }) {
  return crypto.hash('sha256', JSON.stringify({ crv, kty, x, y }), 'base64url');
}

function newSigningKey() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    jwk: { ...jwk, kid: thumbprint(jwk), alg: 'ES256', use: 'sig' },
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }),
    publicPem: publicKey.export({ format: 'pem', type: 'spki' }),
  };
}

function accountClaims(config, accountId) {
  const account = config.accounts.get(accountId);
  if (!account) return undefined;
  return {
    email: account.email,
    email_verified: account.email_verified ?? true,
    groups: account.groups ?? [],
  };
}

function buildProvider(issuer, config, keys, cookieKey) {
  const tokenClaims = new Map();
  const clients = config.clients.map((client) => {
    const { [TOKEN_CLAIMS_KEY]: extra, ...metadata } = client;
    if (extra) tokenClaims.set(metadata.client_id, extra);
    return metadata;
  });
  // oidc-provider's own defaults, spelled out (it logs a notice for each
  // default it falls back on), with the configured ones on top.
  const day = 24 * 60 * 60;
  const ttl = {
    AccessToken: 60 * 60,
    AuthorizationCode: 60,
    DeviceCode: 10 * 60,
    Grant: 14 * day,
    IdToken: 60 * 60,
    Interaction: 60 * 60,
    RefreshToken: 14 * day,
    Session: 14 * day,
  };
  for (const name of ['AccessToken', 'IdToken', 'RefreshToken', 'DeviceCode']) {
    if (config.ttl[name] !== undefined) ttl[name] = config.ttl[name];
  }
  ttl.ClientCredentials = ttl.AccessToken;
  const resourceServer = {
    scope: config.resourceScope,
    audience: config.resource,
    accessTokenFormat: 'jwt',
    accessTokenTTL: ttl.AccessToken,
    jwt: { sign: { alg: 'ES256' } },
  };

  const provider = new Provider(issuer, {
    adapter: SharedMemoryAdapter,
    clients,
    jwks: { keys: keys.map((k) => k.jwk) },
    cookies: { keys: [cookieKey] },
    async findAccount(_ctx, sub) {
      if (!config.accounts.has(sub)) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, ...accountClaims(config, sub) };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    conformIdTokenClaims: false,
    clientDefaults: {
      grant_types: ['authorization_code'],
      id_token_signed_response_alg: 'ES256',
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    responseTypes: ['code'],
    rotateRefreshToken: true,
    async extraTokenClaims(_ctx, token) {
      if (token.kind === 'ClientCredentials') {
        return tokenClaims.get(token.clientId);
      }
      return token.accountId ? accountClaims(config, token.accountId) : undefined;
    },
    formats: {
      customizers: {
        // extraTokenClaims cannot replace the standard claims (`sub` is the
        // client_id); applied again here, a client's claims can, e.g. a
        // CI platform's `sub: "repo:acme/app:ref:refs/heads/main"`.
        async jwt(_ctx, token, jwt) {
          if (token.kind === 'ClientCredentials') {
            Object.assign(jwt.payload, tokenClaims.get(token.clientId));
          }
        },
      },
    },
    ttl,
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? config.resource,
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx, resourceIndicator) {
          if (resourceIndicator === config.resource) return resourceServer;
          throw new errors.InvalidTarget();
        },
      },
    },
    // Errors as JSON, not an HTML page: a failing test shows the reason.
    async renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  // RFC 8628: without `interval` a client waits 5 s between polls.
  // oidc-provider leaves it out of the device authorization response (and
  // does not answer slow_down), so it is added here.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route === 'device_authorization' && ctx.status === 200 && ctx.body) {
      ctx.body.interval = config.deviceInterval;
    }
  });

  for (const event of [
    'server_error',
    'authorization.error',
    'grant.error',
    'device_authorization.error',
    'code_verification.error',
    'revocation.error',
    'jwks.error',
    'discovery.error',
  ]) {
    provider.on(event, (_ctx, err) => log(event, err?.name, err?.message, err?.error_detail ?? ''));
  }
  provider.on('grant.revoked', (_ctx, grantId) => log('grant.revoked', grantId));
  return provider;
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function redirect(res, location) {
  res.writeHead(303, { location, 'content-length': 0 });
  res.end();
}

// The login and consent steps a browser would do, over plain HTTP.
async function interaction(provider, config, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, { error: 'interaction_mismatch', uid, cookie_uid: details.uid });
    return;
  }
  const prompt = details.prompt.name;
  if (req.method === 'GET' && action === undefined) {
    send(res, 200, { uid, prompt, params: details.params });
    return;
  }
  if (req.method !== 'POST') {
    send(res, 405, { error: 'method_not_allowed' });
    return;
  }
  const form = new URLSearchParams(await readBody(req));
  let result;
  if (action === 'abort') {
    result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
  } else if (action === 'login' && prompt === 'login') {
    const accountId = form.get('account');
    if (!config.accounts.has(accountId)) {
      send(res, 400, { error: 'unknown_account', account: accountId });
      return;
    }
    result = { login: { accountId } };
  } else if (action === 'consent' && prompt === 'consent') {
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = details.prompt.details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    send(res, 409, { error: 'wrong_prompt', prompt, action });
    return;
  }
  const returnTo = await provider.interactionResult(req, res, result, {
    mergeWithLastSubmission: action === 'consent',
  });
  redirect(res, returnTo);
}

async function admin(state, req, res, path) {
  const account = path.match(/^\/test\/accounts\/([^/]+)$/);
  if (account) {
    const id = decodeURIComponent(account[1]);
    if (req.method === 'POST') {
      const body = JSON.parse(await readBody(req));
      state.config.accounts.set(id, body);
      log('account set', id, JSON.stringify(body));
      send(res, 200, { id, ...body });
      return;
    }
    if (req.method === 'DELETE') {
      state.config.accounts.delete(id);
      log('account deleted', id);
      send(res, 200, { id });
      return;
    }
  }
  if (path === '/test/rotate' && req.method === 'POST') {
    const key = newSigningKey();
    state.keys.unshift(key);
    state.provider = buildProvider(state.issuer, state.config, state.keys, state.cookieKey);
    state.handler = state.provider.callback();
    log('signing key rotated to', key.jwk.kid);
    send(res, 200, { kid: key.jwk.kid });
    return;
  }
  if (path === '/test/keys' && req.method === 'GET') {
    const [key] = state.keys;
    send(res, 200, {
      kid: key.jwk.kid,
      alg: 'ES256',
      private_pem: key.privatePem,
      public_pem: key.publicPem,
    });
    return;
  }
  send(res, 404, { error: 'not_found', path });
}

async function main() {
  const config = loadConfig(process.argv[2]);
  const state = {
    config,
    keys: [newSigningKey()],
    cookieKey: crypto.randomBytes(32).toString('base64url'),
    issuer: undefined,
    provider: undefined,
    handler: undefined,
  };

  const server = http.createServer((req, res) => {
    const started = Date.now();
    res.on('finish', () => log(req.method, req.url, res.statusCode, `${Date.now() - started}ms`));
    const { pathname } = new URL(req.url, state.issuer);
    const step = pathname.match(/^\/interaction\/([^/]+)(?:\/(login|consent|abort))?$/);
    let handled;
    if (step) {
      handled = interaction(state.provider, config, req, res, step[1], step[2]);
    } else if (pathname.startsWith('/test/')) {
      handled = admin(state, req, res, pathname);
    } else {
      // The current instance: a rotation swaps it for later requests.
      state.handler(req, res);
      return;
    }
    handled.catch((err) => {
      log('error on', req.method, req.url, err?.stack ?? err);
      if (!res.headersSent) {
        send(res, err?.statusCode ?? 500, {
          error: err?.error ?? 'server_error',
          error_description: err?.error_description ?? String(err?.message ?? err),
        });
      }
    });
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  state.issuer = `http://127.0.0.1:${server.address().port}`;
  state.provider = buildProvider(state.issuer, config, state.keys, state.cookieKey);
  state.handler = state.provider.callback();

  const exit = (why) => {
    log('exiting:', why);
    process.exit(0);
  };
  process.stdin.on('end', () => exit('stdin closed'));
  process.stdin.on('error', () => exit('stdin error'));
  process.stdin.resume();
  process.on('SIGTERM', () => exit('SIGTERM'));

  process.stdout.write(`${JSON.stringify({ issuer: state.issuer })}\n`);
  log('ready at', state.issuer);
}

main().catch((err) => {
  log('fatal:', err?.stack ?? err);
  process.exit(1);
});
