// An http-stream function using the Node FDK from npm (@fnproject/fdk).
// Input: optional JSON {"name": "...", "status": 201}; "boom" throws.
const fdk = require('@fnproject/fdk')

fdk.handle(function (input, ctx) {
  const name = (input && input.name) || 'World'
  if (name === 'boom') {
    throw new Error('user asked for boom')
  }
  ctx.httpGateway.setResponseHeader('X-Custom', 'yes')
  if (input && input.status) {
    ctx.httpGateway.statusCode = input.status
  }
  console.error(ctx.callID + ' - hello from func')
  return { message: 'Hello ' + name, callID: ctx.callID }
})
