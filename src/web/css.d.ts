// esbuild bundles the stylesheets the browser code imports; to TypeScript they are modules without exports.
declare module '*.css';
