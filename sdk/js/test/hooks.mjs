// Module resolution hook: the WIT import resolves to the stand-in host.
export async function resolve(specifier, context, next) {
  if (specifier === 'sonde:collector/host@0.2.0') {
    return { url: new URL('./host.mjs', import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
