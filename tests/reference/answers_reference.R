# Reference answers for predictions on new data, marginal means and contrasts, ICC and
# Nakagawa's R² (issue 15): lme4 1.1-31, emmeans 1.8.4-1 (with lmerTest for the
# Satterthwaite df and pbkrtest 0.5.2 for Kenward-Roger's), performance 0.10.2.
#
# Run from the repository root:   Rscript tests/reference/answers_reference.R
# Reads the data files the other reference scripts wrote (tests/reference/data/*.csv),
# writes tests/reference/data/grouseticks.csv and
#   answers_predict.csv     predict() on new rows (seen and unseen levels), both re.form,
#                           with the population prediction's fixed-effect SE
#   answers_emmeans.csv     emmeans (and their df) per case
#   answers_contrasts.csv   pairs() per case and adjustment
#   answers_r2.csv          icc() and r2_nakagawa() per model
#   answers_condvar.csv     the conditional covariance of each level's random effects
#                           (ranef(condVar = TRUE)'s postVar) of sleepstudy's slopes model
#   answers_session.txt     sessionInfo()
# Every data set is read with read.csv(), so R sees what the Python side sees. GLMM
# marginal means use vcov(m, use.hessian = FALSE) (the RX-based covariance the engine
# reports; see tests/reference/README.md).

suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(emmeans)
  library(performance)
})

ref_dir <- file.path("tests", "reference")
data_dir <- file.path(ref_dir, "data")
if (!dir.exists(ref_dir)) stop("run from the repository root")
num <- function(x) sprintf("%.17g", x)
ctrl <- glmerControl(tolPwrss = 1e-10)

sleep <- read.csv(file.path(data_dir, "sleepstudy.csv"), stringsAsFactors = TRUE)
sleep$Subject <- factor(sleep$Subject)
cake <- read.csv(file.path(data_dir, "cake.csv"), stringsAsFactors = TRUE)
cake$replicate <- factor(cake$replicate)
contra <- read.csv(file.path(data_dir, "Contraception.csv"), stringsAsFactors = TRUE)
contra$district <- factor(contra$district)
cbpp <- read.csv(file.path(data_dir, "cbpp.csv"), stringsAsFactors = TRUE)
cbpp$herd <- factor(cbpp$herd)
cbpp$period <- factor(cbpp$period)
data(grouseticks, package = "lme4")
grouse <- as.data.frame(grouseticks)[, c("INDEX", "TICKS", "BROOD", "HEIGHT", "YEAR", "LOCATION")]
write.csv(grouse, file.path(data_dir, "grouseticks.csv"), row.names = FALSE)
grouse <- read.csv(file.path(data_dir, "grouseticks.csv"), stringsAsFactors = TRUE)
grouse$BROOD <- factor(grouse$BROOD)
grouse$LOCATION <- factor(grouse$LOCATION)
grouse$YEAR <- factor(grouse$YEAR)

# ---- predictions on new data --------------------------------------------------------
pred_rows <- list()
add_pred <- function(case, m, newdata, type) {
  X <- model.matrix(delete.response(terms(m)), newdata)
  se <- sqrt(diag(X %*% as.matrix(vcov(m, use.hessian = FALSE)) %*% t(X)))
  cond <- predict(m, newdata = newdata, re.form = NULL, allow.new.levels = TRUE, type = "link")
  pop <- predict(m, newdata = newdata, re.form = NA, type = "link")
  pred_rows[[length(pred_rows) + 1]] <<- data.frame(
    case = case, row = seq_len(nrow(newdata)), conditional_link = num(cond), population_link = num(pop),
    population_se_link = num(se))
}
m_sleep <- lmer(Reaction ~ Days + (Days | Subject), sleep)
new_sleep <- data.frame(Subject = c("308", "308", "309", "999", "999", "1000"),
                        Days = c(0, 4.5, 9, 0, 7, 12))
write.csv(new_sleep, file.path(data_dir, "sleepstudy_new.csv"), row.names = FALSE)
add_pred("sleep_slopes", m_sleep, new_sleep)
post <- attr(ranef(m_sleep, condVar = TRUE)$Subject, "postVar")
write.csv(data.frame(level = rownames(ranef(m_sleep)$Subject), var_intercept = num(post[1, 1, ]),
                     var_days = num(post[2, 2, ]), cov_intercept_days = num(post[1, 2, ])),
          file.path(ref_dir, "answers_condvar.csv"), row.names = FALSE)
m_contra <- glmer(use01 ~ age + urban + (1 | district), contra, binomial, control = ctrl)
new_contra <- data.frame(district = c("1", "1", "60", "999"), age = c(-5, 10, 0, 3),
                         urban = c("Y", "N", "N", "Y"))
write.csv(new_contra, file.path(data_dir, "Contraception_new.csv"), row.names = FALSE)
add_pred("contra", m_contra, new_contra)
write.csv(do.call(rbind, pred_rows), file.path(ref_dir, "answers_predict.csv"), row.names = FALSE)

# ---- marginal means and contrasts -----------------------------------------------------
emm_rows <- list()
con_rows <- list()
add_emm <- function(case, emm, adjusts = c("tukey", "holm", "bonferroni", "none")) {
  s <- as.data.frame(summary(emm))
  level <- do.call(paste, c(lapply(s[, attr(summary(emm), "pri.vars"), drop = FALSE], as.character), sep = ","))
  est <- intersect(c("emmean", "prob", "rate", "response"), names(s))[1]
  lo <- intersect(c("lower.CL", "asymp.LCL"), names(s))[1]
  hi <- intersect(c("upper.CL", "asymp.UCL"), names(s))[1]
  emm_rows[[length(emm_rows) + 1]] <<- data.frame(
    case = case, level = level, estimate = num(s[[est]]), std_error = num(s$SE), df = num(s$df),
    conf_low = num(s[[lo]]), conf_high = num(s[[hi]]))
  for (adj in adjusts) {
    p <- as.data.frame(summary(pairs(emm, adjust = adj), infer = c(TRUE, TRUE)))
    est <- intersect(c("estimate", "odds.ratio", "ratio"), names(p))[1]
    lo <- intersect(c("lower.CL", "asymp.LCL"), names(p))[1]
    hi <- intersect(c("upper.CL", "asymp.UCL"), names(p))[1]
    con_rows[[length(con_rows) + 1]] <<- data.frame(
      case = case, adjust = adj, contrast = as.character(p$contrast), estimate = num(p[[est]]),
      std_error = num(p$SE), df = num(p$df), p_value = num(p$p.value),
      conf_low = num(p[[lo]]), conf_high = num(p[[hi]]))
  }
}
m_cake <- lmer(angle ~ recipe * factor(temp) + (1 | recipe:replicate), cake)
add_emm("cake_factorial", emmeans(m_cake, ~ recipe, lmer.df = "satterthwaite"))
m_cake_cov <- lmer(angle ~ recipe + temp + (1 | recipe:replicate), cake)
add_emm("cake_covariate", emmeans(m_cake_cov, ~ recipe, lmer.df = "satterthwaite"))
add_emm("cake_covariate_at", emmeans(m_cake_cov, ~ recipe, at = list(temp = 215), lmer.df = "satterthwaite"),
        adjusts = "tukey")
# Kenward-Roger: df by pbkrtest's Lb_ddf, SEs from its adjusted covariance
add_emm("cake_factorial_kr", emmeans(m_cake, ~ recipe, lmer.df = "kenward-roger"))
add_emm("cake_covariate_at_kr", emmeans(m_cake_cov, ~ recipe, at = list(temp = 215), lmer.df = "kenward-roger"),
        adjusts = "tukey")
add_emm("sleep_days_kr", emmeans(m_sleep, ~ Days, at = list(Days = c(0, 4.5, 9)), lmer.df = "kenward-roger"),
        adjusts = "none")
# unbalanced schools (the first 12 of mlmRev's Exam): Kenward-Roger's adjusted SEs differ
# from the unadjusted ones by about 3e-3, which the Satterthwaite cases cannot show
exam <- read.csv(file.path(data_dir, "Exam.csv"), stringsAsFactors = TRUE)
exam12 <- exam[exam$school %in% 1:12, ]
exam12$school <- factor(exam12$school)
add_emm("exam12_kr", emmeans(lmer(normexam ~ standLRT + sex + (1 | school), exam12), ~ sex,
                             lmer.df = "kenward-roger"), adjusts = c("none", "tukey"))
m_cbpp <- glmer(cbind(incidence, healthy) ~ period + (1 | herd), cbpp, binomial, control = ctrl)
add_emm("cbpp_response", emmeans(m_cbpp, ~ period, type = "response",
                                 vcov. = as.matrix(vcov(m_cbpp, use.hessian = FALSE))))
add_emm("contra_response", emmeans(m_contra, ~ urban, type = "response",
                                   vcov. = as.matrix(vcov(m_contra, use.hessian = FALSE))), adjusts = "none")
m_cbpp_rate <- glmer(incidence ~ period + offset(log(size)) + (1 | herd), cbpp, poisson, control = ctrl)
add_emm("cbpp_rate_offset", emmeans(m_cbpp_rate, ~ period, type = "response",
                                    vcov. = as.matrix(vcov(m_cbpp_rate, use.hessian = FALSE))), adjusts = "tukey")
write.csv(do.call(rbind, emm_rows), file.path(ref_dir, "answers_emmeans.csv"), row.names = FALSE)
write.csv(do.call(rbind, con_rows), file.path(ref_dir, "answers_contrasts.csv"), row.names = FALSE)

# ---- ICC and R² -------------------------------------------------------------------------
r2_rows <- list()
add_r2 <- function(case, m) {
  i <- suppressWarnings(icc(m))
  r <- suppressWarnings(r2_nakagawa(m))
  r2_rows[[length(r2_rows) + 1]] <<- data.frame(
    case = case, icc_adjusted = num(i$ICC_adjusted), icc_conditional = num(i$ICC_conditional),
    r2_marginal = num(r$R2_marginal), r2_conditional = num(r$R2_conditional))
}
add_r2("sleep_intercept", lmer(Reaction ~ Days + (1 | Subject), sleep))
add_r2("sleep_slopes", m_sleep)
add_r2("cake_covariate", m_cake_cov)
add_r2("contra_logit", m_contra)
add_r2("contra_probit", glmer(use01 ~ age + urban + (1 | district), contra, binomial("probit"), control = ctrl))
add_r2("grouse_poisson", glmer(TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION), grouse, poisson, control = ctrl))
write.csv(do.call(rbind, r2_rows), file.path(ref_dir, "answers_r2.csv"), row.names = FALSE)

writeLines(capture.output(sessionInfo()), file.path(ref_dir, "answers_session.txt"))
