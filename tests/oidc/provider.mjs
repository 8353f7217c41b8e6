// A real OpenID Connect provider for tests/test_oidc.py (npm `oidc-provider`, OpenID
// Certified), listening on 127.0.0.1 only. Never used outside the tests.
//
//   node provider.mjs <port>            (or OIDC_PORT)
//
// Environment:
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI   the one confidential client
//   OIDC_AUDIENCE    resource indicator (= `aud`) of the API's JWT access tokens
//                    (default urn:onefamily:api); it is also the default resource
//   OIDC_OTHER_AUDIENCE  a second, tests-only resource (default urn:onefamily:other)
//   OIDC_ACCOUNTS    comma-separated account ids (default anna,mia); preferred_username = the id
//   OIDC_JWKS_FILE   optional: a private JWK Set (JSON) to sign with; otherwise one RSA key is
//                    generated at start
//
//   OIDC_PASSWORD    the password of every account (default `password`)
//
// The login page is our own small form (oidc-provider's development pages import web fonts
// from a CDN); consent is granted without a page, as for a first-party client. PKCE (S256) is
// required for every authorization request.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider, { errors } from 'oidc-provider';

const port = Number(process.argv[2] || process.env.OIDC_PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node provider.mjs <port>  (or set OIDC_PORT)');
  process.exit(2);
}
const required = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`missing environment variable ${name}`);
    process.exit(2);
  }
  return value;
};

const issuer = `http://127.0.0.1:${port}`;
const clientId = required('OIDC_CLIENT_ID');
const clientSecret = required('OIDC_CLIENT_SECRET');
const redirectUri = required('OIDC_REDIRECT_URI');
const audience = process.env.OIDC_AUDIENCE || 'urn:onefamily:api';
const otherAudience = process.env.OIDC_OTHER_AUDIENCE || 'urn:onefamily:other';
const password = process.env.OIDC_PASSWORD || 'password';
const accounts = new Set((process.env.OIDC_ACCOUNTS || 'anna,mia').split(',').map((s) => s.trim()).filter(Boolean));

function signingKeys() {
  if (process.env.OIDC_JWKS_FILE) {
    return JSON.parse(readFileSync(process.env.OIDC_JWKS_FILE, 'utf8'));
  }
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' }] };
}

// Resource servers the provider issues JWT access tokens for; `aud` = the indicator.
const resources = {
  [audience]: { scope: 'api' },
  [otherAudience]: { scope: 'api' },
};

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    response_types: ['code'],
    grant_types: ['authorization_code', 'client_credentials'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  async findAccount(_ctx, id) {
    if (!accounts.has(id)) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: id };
      },
    };
  },
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'] },
  // The ID token carries the profile claims (as Entra ID and Keycloak do by default).
  conformIdTokenClaims: false,
  // Access tokens carry the account's preferred_username too (the API maps it to staff).
  async extraTokenClaims(_ctx, token) {
    return token.accountId ? { preferred_username: token.accountId } : undefined;
  },
  pkce: { required: () => true },
  jwks: signingKeys(),
  cookies: { keys: [randomBytes(32).toString('hex')] },
  ttl: { AccessToken: 300, AuthorizationCode: 60, IdToken: 300, Interaction: 300, Session: 3600, Grant: 3600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      async defaultResource(_ctx, _client, oneOf) {
        return oneOf || audience;
      },
      async useGrantedResource() {
        return true;
      },
      async getResourceServerInfo(_ctx, indicator) {
        const resource = resources[indicator];
        if (!resource) throw new errors.InvalidTarget();
        return {
          scope: resource.scope,
          audience: indicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
};

const provider = new Provider(issuer, configuration);

const escape = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, error) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test provider: sign in</title></head>
<body><h1>Test provider: sign in</h1>${error ? `<p id="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}">
<input type="hidden" name="prompt" value="login">
<label>Login <input id="login" name="login" autocomplete="username" required></label>
<label>Password <input id="password" name="password" type="password" autocomplete="current-password" required></label>
<button id="sign-in" type="submit">Sign in</button></form></body></html>`;
}

async function formBody(req) {
  let raw = '';
  for await (const chunk of req) {
    raw += chunk;
    if (raw.length > 10_000) throw new Error('body too large');
  }
  return Object.fromEntries(new URLSearchParams(raw));
}

// First-party client: grant what the request asks for (what the dev consent page would).
async function grantConsent(details) {
  const { prompt: { details: missing }, grantId, session, params } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return { consent: { grantId: await grant.save() } };
}

provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([\w-]+)$/);
  if (!match) return next();
  ctx.set('Cache-Control', 'no-store');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  let result;
  if (details.prompt.name === 'consent') {
    result = await grantConsent(details);
  } else if (ctx.method === 'POST') {
    const body = await formBody(ctx.req);
    if (!accounts.has(body.login) || body.password !== password) {
      ctx.type = 'html';
      ctx.body = loginPage(details.uid, 'Wrong login or password.');
      return undefined;
    }
    result = { login: { accountId: body.login } };
  } else {
    ctx.type = 'html';
    ctx.body = loginPage(details.uid);
    return undefined;
  }
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  ctx.redirect(returnTo);
  ctx.status = 303;
  return undefined;
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
