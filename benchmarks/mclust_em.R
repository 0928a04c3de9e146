# EM iterations of R's mclust (model VVV: full covariances) from given parameters, timed.
# Called by bench_em.py:  Rscript mclust_em.R X.bin n d k weights.bin means.bin covs.bin iters repeats
# The binaries are little-endian float64, row-major (NumPy's tofile). Prints one line per fit:
# "first|repeat seconds loglik iterations".
args <- commandArgs(trailingOnly = TRUE)
suppressMessages(library(mclust))
n <- as.integer(args[2]); d <- as.integer(args[3]); k <- as.integer(args[4])
iters <- as.integer(args[8]); repeats <- as.integer(args[9])
X <- matrix(readBin(args[1], "double", n * d), nrow = n, ncol = d, byrow = TRUE)
pro <- readBin(args[5], "double", k)
mu <- matrix(readBin(args[6], "double", k * d), nrow = d, ncol = k)  # column g = mean of g
sigma <- array(readBin(args[7], "double", k * d * d), c(d, d, k))  # symmetric: order is moot
chol_sigma <- array(apply(sigma, 3, chol), c(d, d, k))
par <- list(pro = pro, mean = mu, variance = list(modelName = "VVV", d = d, G = k, sigma = sigma,
                                                  cholsigma = chol_sigma))
# tol zero: no early stop, run exactly `iters` iterations as the other libraries do.
ctrl <- emControl(tol = c(0, 0), itmax = c(iters, iters))
fit <- function() {
  t <- system.time(out <- em(data = X, modelName = "VVV", parameters = par, control = ctrl))
  c(t[["elapsed"]], format(out$loglik, digits = 17), abs(attr(out, "info")[1]))
}
r <- fit()
cat("first", r, "\n")
for (i in seq_len(repeats)) cat("repeat", fit(), "\n")
