import Provider from 'oidc-provider';
const port = Number(process.env.PORT || 3000);
const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{ client_id: 'bench', client_secret: 'bench-secret-bench-secret-bench-secret-123', grant_types: ['client_credentials'], redirect_uris: [], response_types: [], token_endpoint_auth_method: 'client_secret_basic' }],
  features: { clientCredentials: { enabled: true }, introspection: { enabled: true }, devInteractions: { enabled: false } },
  scopes: ['identify', 'guilds'],
});
provider.listen(port, '127.0.0.1', () => console.log(`peer listening on ${port}`));
