# Reference fits of R's mclust for bayesgmm's tests, driven by benchmarks/mclust_reference.py.
#
# Usage: Rscript benchmarks/mclust_reference.R IN_DIR OUT_JSON
#   IN_DIR/datasets.json lists the data sets: name, csv (no header, one row per sample,
#   written with 17 significant digits so that R reads the same doubles as numpy), and
#   params_map (TRUE: keep the MAP parameters of every prior fit).
#   IN_DIR/optima.json lists the named optima (dataset, model, G) whose ML parameters are kept.
#
# Every fit is mclust's own analysis: mclustBIC over the whole grid (one hierarchical
# clustering per data set, as Mclust(X, G = 1:9, modelNames = M) does), then
# Mclust(X, G = k, modelNames = m, x = bic) for each cell, which re-runs EM from the same
# hierarchical start and returns the fitted model.

suppressPackageStartupMessages({
  library(mclust)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
in_dir <- args[1]
out_json <- args[2]
datasets <- fromJSON(file.path(in_dir, "datasets.json"), simplifyVector = FALSE)
optima <- fromJSON(file.path(in_dir, "optima.json"), simplifyVector = FALSE)

MODELS <- c("VVV", "EEE", "VVI", "VII")
GRID <- 1:9
RETURN_CODES <- c(
  "-1" = "singular covariance",
  "-2" = "z column sum fell below threshold",
  "-3" = "mixing proportion fell below threshold",
  "1" = "iteration limit reached",
  "9" = "z is missing"
)

# Parameters in bayesgmm's orientation: weights (G), means (G x d), sigma (G x d x d).
fit_params <- function(fit, d) {
  p <- fit$parameters
  G <- fit$G
  mu <- matrix(p$mean, nrow = d)
  sigma <- array(p$variance$sigma, c(d, d, G))
  list(
    weights = as.numeric(p$pro),
    means = lapply(seq_len(G), function(k) as.numeric(mu[, k])),
    sigma = lapply(seq_len(G), function(k) {
      lapply(seq_len(d), function(i) as.numeric(sigma[i, , k]))
    })
  )
}

data_loglik <- function(X, fit) {
  sum(dens(data = X, modelName = fit$modelName, parameters = fit$parameters, logarithm = TRUE))
}

grid_fits <- function(X, prior, keep_params, polish) {
  d <- ncol(X)
  bic <- if (is.null(prior)) {
    mclustBIC(X, G = GRID, modelNames = MODELS)
  } else {
    mclustBIC(X, G = GRID, modelNames = MODELS, prior = prior)
  }
  codes <- attr(bic, "returnCodes")
  out <- list()
  for (m in MODELS) {
    rows <- list()
    for (k in GRID) {
      row <- list(G = k)
      code <- codes[as.character(k), m]
      fit <- NULL
      if (!is.na(bic[as.character(k), m])) {
        # With x = bic, Mclust takes the prior (and the hierarchical start) from bic.
        fit <- Mclust(X, G = k, modelNames = m, x = bic)
      }
      if (is.null(fit)) {
        reason <- RETURN_CODES[as.character(code)]
        if (is.na(reason)) reason <- paste("mclust returned NA, return code", code)
        row <- c(row, list(loglik = NA, df = NA, bic = NA, return_code = code, reason = reason))
      } else {
        row <- c(row, list(
          loglik = fit$loglik, loglik_data = data_loglik(X, fit), df = fit$df, bic = fit$bic,
          return_code = code
        ))
        if (keep_params(m, k)) row$params <- fit_params(fit, d)
        if (polish(m, k)) {
          # The same EM run to a much tighter tolerance from mclust's estimate: the optimum
          # itself, free of mclust's default stopping rule (relative 1e-5).
          tight <- if (is.null(prior)) {
            em(data = X, modelName = m, parameters = fit$parameters,
               control = emControl(tol = c(1e-13, 1e-13)))
          } else {
            em(data = X, modelName = m, parameters = fit$parameters, prior = prior,
               control = emControl(tol = c(1e-13, 1e-13)))
          }
          if (is.na(tight$loglik)) {
            code <- attr(tight, "returnCode")
            row$loglik_tight <- NA
            row$reason_tight <- RETURN_CODES[as.character(code)]
          } else {
            row$loglik_tight <- tight$loglik
            row$loglik_tight_data <- data_loglik(X, tight)
            row$iterations_tight <- unname(attr(tight, "info")["iterations"])
            row$params_tight <- fit_params(c(tight, list(G = k)), d)
          }
        }
      }
      rows[[length(rows) + 1]] <- row
    }
    out[[m]] <- rows
  }
  out
}

result <- list(
  mclust_version = as.character(packageVersion("mclust")),
  R_version = R.version.string,
  mclust_options = list(
    hcModelName = mclust.options("hcModelName"), hcUse = mclust.options("hcUse"),
    emControl = emControl()
  ),
  ml = list(), map = list(), default_prior = list()
)

for (ds in datasets) {
  X <- as.matrix(read.csv(file.path(in_dir, ds$csv), header = FALSE))
  dimnames(X) <- NULL
  is_optimum <- function(m, k) {
    any(vapply(optima, function(o) o$dataset == ds$name && o$model == m && o$G == k, TRUE))
  }
  cat(ds$name, nrow(X), "x", ncol(X), "\n", file = stderr())
  result$ml[[ds$name]] <- grid_fits(X, NULL, is_optimum, is_optimum)
  keep_map <- function(m, k) isTRUE(ds$params_map)
  result$map[[ds$name]] <- grid_fits(X, priorControl(), keep_map, keep_map)
  priors <- list()
  for (m in MODELS) {
    priors[[m]] <- lapply(GRID, function(k) {
      p <- defaultPrior(X, G = k, modelName = m)
      list(G = k, shrinkage = p$shrinkage, mean = as.numeric(p$mean), dof = p$dof,
           scale = if (is.matrix(p$scale)) lapply(seq_len(nrow(p$scale)),
                                                  function(i) as.numeric(p$scale[i, ]))
                   else as.numeric(p$scale))
    })
  }
  result$default_prior[[ds$name]] <- priors
}

# jsonlite prints at most 15 significant digits; 17 are needed to carry a double exactly, so
# numbers travel as strings "num:<%.17g>" that the Python driver turns back into numbers.
exact <- function(x) {
  if (is.list(x)) {
    y <- lapply(x, exact)
    names(y) <- names(x)
    y
  } else if (is.numeric(x)) {
    ifelse(is.na(x), NA_character_, paste0("num:", sprintf("%.17g", as.double(x))))
  } else {
    x
  }
}

write_json(exact(result), out_json, auto_unbox = TRUE, na = "null", pretty = FALSE)
