{
  description = "kiln: reproducible, hermetic K3s Kubernetes patch releases";

  # Not evaluated on kiln's own CI machine (nixpkgs is unreachable there): CI checks that this
  # file parses (`nix-instantiate --parse flake.nix`). The first `nix build` writes flake.lock.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system:
      let
        pkgs = nixpkgs.legacyPackages.${system};
        manifest = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package;
        # The sources cargo needs, nothing a local run leaves behind.
        src = pkgs.lib.cleanSourceWith {
          src = ./.;
          filter = path: type:
            let name = baseNameOf path;
            in !(builtins.elem name [ "target" "demo-world" "kiln-verify" ".kiln-store" ])
              && pkgs.lib.cleanSourceFilter path type;
        };
        kiln = pkgs.rustPlatform.buildRustPackage {
          pname = manifest.name;
          version = manifest.version;
          inherit src;
          cargoLock.lockFile = ./Cargo.lock;
          # aws-lc-rs (TLS to remote engines and registries) builds aws-lc from C.
          nativeBuildInputs = [ pkgs.cmake pkgs.perl pkgs.pkg-config ];
          # The unit tests: the integration tests (tests/it) need a Docker engine and the
          # bootstrapped toolchain images, which a Nix build sandbox has not; `scripts/test`
          # runs those.
          cargoTestFlags = [ "--lib" ];
          nativeCheckInputs = [ pkgs.git ];
          preCheck = ''
            export HOME=$TMPDIR
          '';
          meta = {
            description = manifest.description;
            license = pkgs.lib.licenses.asl20;
            mainProgram = "kiln";
            platforms = pkgs.lib.platforms.linux;
          };
        };
      in
      {
        packages.default = kiln;
        packages.kiln = kiln;

        # `nix flake check`: builds kiln and runs its unit tests.
        checks.default = kiln;

        # `nix develop`: what the README's commands need, minus the engine itself (kiln's
        # scripts start Debian's dockerd; under Nix, point DOCKER_HOST at any engine).
        devShells.default = pkgs.mkShell {
          inputsFrom = [ kiln ];
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.git
            pkgs.docker-client
            pkgs.mmdebstrap
          ];
        };
      });
}
